package proto_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/berth-io/berth/internal/testenv"
)

// TestGeneratedCodeIsFresh regenerates proto/rpc and proto/datapath into a temporary directory
// with the pinned generators and fails when the committed files differ, so a
// .proto edit without `make proto` cannot land.
func TestGeneratedCodeIsFresh(t *testing.T) {
	protoc, err := exec.LookPath("protoc")
	testenv.Require(t, err == nil, "protoc not installed (make deps installs protobuf-compiler)")
	out := t.TempDir()
	args := []string{"-I", ".", "--go_out=" + out, "--go_opt=module=github.com/berth-io/berth",
		"--go-grpc_out=" + out, "--go-grpc_opt=module=github.com/berth-io/berth"}
	for _, plugin := range []string{"protoc-gen-go", "protoc-gen-go-grpc"} {
		path, err := exec.Command("go", "tool", "-n", plugin).Output()
		if err != nil {
			t.Fatalf("go tool -n %s: %v", plugin, err)
		}
		args = append(args, "--plugin="+plugin+"="+string(bytes.TrimSpace(path)))
	}
	cmd := exec.Command(protoc, append(args, "rpc.proto", "datapath.proto")...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("protoc: %v\n%s", err, b)
	}
	for _, name := range []string{"rpc/rpc.pb.go", "rpc/rpc_grpc.pb.go", "datapath/datapath.pb.go"} {
		want, err := os.ReadFile(filepath.Join(out, "proto", name))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("proto/%s is stale: run make proto and commit the result", name)
		}
	}
}
