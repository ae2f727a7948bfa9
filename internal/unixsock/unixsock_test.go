package unixsock

import (
	"os"
	"path/filepath"
	"testing"
)

func TestListenReplacesStaleSocketWith0660(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "x.sock")
	first, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	// A crashed daemon leaves its socket file behind.
	first.(interface{ SetUnlinkOnClose(bool) }).SetUnlinkOnClose(false)
	first.Close()
	ln, err := Listen(path)
	if err != nil {
		t.Fatalf("listen over a stale socket: %v", err)
	}
	defer ln.Close()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o660 || st.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket mode %v, want 0660 socket", st.Mode())
	}
}
