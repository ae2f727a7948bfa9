package nsrun

import (
	"fmt"
	"os"
	"os/exec"
	"testing"

	"github.com/vishvananda/netns"

	"github.com/berth-io/berth/internal/testenv"
)

func TestInSwitchesAndReturns(t *testing.T) {
	testenv.RequireRoot(t, "creates a network namespace")
	name := fmt.Sprintf("nsrun-test-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	want, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	defer want.Close()
	var inside bool
	if err := In(name, func() error {
		cur, err := netns.Get()
		if err != nil {
			return err
		}
		defer cur.Close()
		inside = cur.Equal(want)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !inside {
		t.Fatal("fn did not run inside the namespace")
	}
	if err := In("nsrun-does-not-exist", func() error { return nil }); err == nil {
		t.Fatal("a missing namespace was not an error")
	}
	wantErr := fmt.Errorf("from fn")
	if err := In(name, func() error { return wantErr }); err != wantErr {
		t.Fatalf("fn's error came back as %v", err)
	}
}
