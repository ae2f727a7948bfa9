package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// berth-cni's log is rotated past its size, keeping a bounded number of
// backups, newest first; a small file, a missing one or a device is left
// alone.
func TestRotatePluginLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "plugin.log")
	if err := rotatePluginLog(path, 10, 3); err != nil {
		t.Fatalf("missing file: %v", err)
	}
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("small")
	if err := rotatePluginLog(path, 10, 3); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + ".1"); err == nil {
		t.Fatal("a file under the limit was rotated")
	}
	for i := range 5 {
		write(fmt.Sprintf("generation %d, past the limit", i))
		if err := rotatePluginLog(path, 10, 3); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(path); err == nil {
		t.Fatal("the rotated file is still there")
	}
	for i, want := range map[int]string{1: "generation 4", 2: "generation 3", 3: "generation 2"} {
		b, err := os.ReadFile(fmt.Sprintf("%s.%d", path, i))
		if err != nil || !strings.HasPrefix(string(b), want) {
			t.Errorf("%s.%d: %q %v, want %q", path, i, b, err, want)
		}
	}
	if _, err := os.Stat(path + ".4"); err == nil {
		t.Error("more backups kept than asked")
	}
	if err := rotatePluginLog("/dev/null", 0, 3); err != nil {
		t.Errorf("a device: %v", err)
	}
}
