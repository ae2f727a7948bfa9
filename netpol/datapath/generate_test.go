package datapath

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-io/berth/internal/testenv"
)

// TestBPFObjectsFresh reruns the go:generate line of gen.go into a
// temporary directory and fails when the committed object or Go file
// differs, so a netpol/bpf edit without `make bpf` cannot land.
func TestBPFObjectsFresh(t *testing.T) {
	for _, tool := range []string{"clang", "llvm-strip"} {
		_, err := exec.LookPath(tool)
		testenv.Require(t, err == nil, tool+" not installed (make deps installs clang and llvm)")
	}
	src, err := os.ReadFile("gen.go")
	if err != nil {
		t.Fatal(err)
	}
	var line string
	for l := range strings.Lines(string(src)) {
		if rest, ok := strings.CutPrefix(l, "//go:generate "); ok {
			line = strings.TrimSpace(rest)
		}
	}
	args := splitArgs(line)
	if len(args) < 3 || args[0] != "go" || args[1] != "tool" || args[2] != "bpf2go" {
		t.Fatalf("unexpected go:generate line %q", line)
	}
	out := t.TempDir()
	args = append([]string{"tool", "bpf2go", "-output-dir", out}, args[3:]...)
	cmd := exec.Command("go", args...)
	cmd.Env = append(os.Environ(), "GOPACKAGE=datapath")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("bpf2go: %v\n%s", err, b)
	}
	for _, name := range []string{"netpol_bpfel.go", "netpol_bpfel.o"} {
		want, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("netpol/datapath/%s is stale: run make bpf and commit the result", name)
		}
	}
}

// splitArgs splits a go:generate line on spaces, keeping double-quoted
// words together (the subset of go generate's quoting gen.go uses).
func splitArgs(s string) []string {
	var args []string
	var cur strings.Builder
	quoted, inWord := false, false
	for _, r := range s {
		switch {
		case r == '"':
			quoted, inWord = !quoted, true
		case r == ' ' && !quoted:
			if inWord {
				args = append(args, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		args = append(args, cur.String())
	}
	return args
}
