package store

import (
	"os"
	"path/filepath"
	"testing"
)

func TestSaveLoadRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	type state struct{ Items map[string]int }
	var got state
	if ok, err := Load(path, &got); ok || err != nil {
		t.Fatalf("Load of a missing file = %v, %v; want false, nil", ok, err)
	}
	if err := Save(path, state{Items: map[string]int{"a": 1}}, 0o600); err != nil {
		t.Fatal(err)
	}
	if ok, err := Load(path, &got); !ok || err != nil || got.Items["a"] != 1 {
		t.Fatalf("Load = %v, %v, %+v", ok, err, got)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v", fi.Mode(), err)
	}
	left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".*tmp*"))
	if len(left) != 0 {
		t.Fatalf("temp files left behind: %v", left)
	}
}

func TestCorruptStateIsAnError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if _, err := Load(path, &v); err == nil {
		t.Fatal("corrupt state loaded without error")
	}
}
