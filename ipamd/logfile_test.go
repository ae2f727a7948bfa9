package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// AWS_VPC_K8S_CNI_LOG_FILE, as aws-node's manifests set it, sends ipamd's
// log to that file (made with its directory, mode 0600); the command line
// still wins, and a file ipamd cannot write stops it at start.
func TestLogFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "aws-routed-eni", "ipamd.log")
	t.Setenv("AWS_VPC_K8S_CNI_LOG_FILE", file)
	// A value the VPC CNI skips with a warning, then one that stops it:
	// the warning is logged before the error ends the run.
	t.Setenv("WARM_ENI_TARGET", "lots")
	t.Setenv("AWS_VPC_ENI_MTU", "1")
	root := newRootCommand()
	root.SetArgs(nil)
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "AWS_VPC_ENI_MTU") {
		t.Fatalf("run: %v, want the MTU refused", err)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "WARM_ENI_TARGET") || !strings.Contains(string(b), "ipamd stopped") {
		t.Fatalf("log file holds %q, want the warning about WARM_ENI_TARGET and why ipamd stopped", b)
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("log file mode: %v %v", fi.Mode(), err)
	}
	if got := newRootCommand().Flags().Lookup("log-file").Value.String(); got != file {
		t.Fatalf("--log-file default %q, want %q", got, file)
	}

	for _, dest := range []string{"stdout", "STDERR", "", "/dev/stdout", "/dev/stderr"} {
		if _, closer, err := logWriter(dest); err != nil || closer() != nil {
			t.Errorf("%q: %v", dest, err)
		}
	}
	blocker := filepath.Join(t.TempDir(), "not-a-dir")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := logWriter(filepath.Join(blocker, "ipamd.log")); err == nil {
		t.Fatal("a log file under a regular file was accepted")
	}
	// A directory or a device would be renamed by the first rotation.
	dir := t.TempDir()
	for _, bad := range []string{dir, "/dev/null"} {
		if _, _, err := logWriter(bad); err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("%s: %v, want it refused", bad, err)
		}
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		t.Fatalf("the refused directory was touched: %v", err)
	}
}
