package instancetypes

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func TestKnownTypes(t *testing.T) {
	for _, tc := range []struct {
		name            string
		enis, ipv4      int
		hypervisor      string
		prefixes, metal bool
	}{
		{"m5.large", 3, 10, "nitro", true, false},
		{"t3.nano", 2, 2, "nitro", true, false},
		{"t3.medium", 3, 6, "nitro", true, false},
		{"c5n.18xlarge", 15, 50, "nitro", true, false},
		{"t2.micro", 2, 2, "xen", false, false},
		{"m5.metal", 15, 50, "nitro", true, true},
	} {
		i, ok := Lookup(tc.name)
		if !ok {
			t.Errorf("%s missing", tc.name)
			continue
		}
		if i.MaxENIs != tc.enis || i.IPv4PerENI != tc.ipv4 || i.Hypervisor != tc.hypervisor || i.PrefixDelegation != tc.prefixes || i.BareMetal != tc.metal {
			t.Errorf("%s = %+v", tc.name, i)
		}
	}
	if _, ok := Lookup("x9.huge"); ok {
		t.Error("unknown type found")
	}
}

func TestTableSane(t *testing.T) {
	all := All()
	if len(all) < 30 {
		t.Fatalf("only %d types", len(all))
	}
	for n, i := range all {
		if n > 0 && all[n-1].Name >= i.Name {
			t.Errorf("not sorted/unique at %s", i.Name)
		}
		if i.MaxENIs < 1 || i.IPv4PerENI < 1 || i.VCPUs < 1 || i.MemoryMiB < 512 || i.MaxEBSAttachments < 1 {
			t.Errorf("implausible %+v", i)
		}
	}
	all[0].Name = "mutated"
	if All()[0].Name == "mutated" {
		t.Error("All returns the table itself")
	}
}

func TestGeneratedTableIsFresh(t *testing.T) {
	out := filepath.Join(t.TempDir(), "gen.go")
	cmd := exec.Command("go", "run", "./gen", "-in", "data/instance-types.csv", "-out", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("generator: %v\n%s", err, b)
	}
	want, _ := os.ReadFile(out)
	got, _ := os.ReadFile("zz_generated_types.go")
	if !bytes.Equal(got, want) {
		t.Fatal("zz_generated_types.go is stale: run go generate ./internal/instancetypes")
	}
}
