package params

import (
	"errors"
	"strings"
	"testing"
)

func base(kv ...string) map[string]string {
	m := map[string]string{ProvisioningMode: "efs-ap", FileSystemID: "fs-0123abcd", DirectoryPerms: "700"}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "<delete>" {
			delete(m, kv[i])
			continue
		}
		m[kv[i]] = kv[i+1]
	}
	return m
}

func TestParseDefaults(t *testing.T) {
	p, err := Parse(base())
	if err != nil {
		t.Fatal(err)
	}
	if p.UID != -1 || p.GID != -1 || p.GIDRangeStart != DefaultGIDRangeStart || p.GIDRangeEnd != DefaultGIDRangeEnd ||
		!p.EnsureUniqueDirectory || p.ReuseAccessPoint || p.SubPathPattern != DefaultSubPathPattern {
		t.Errorf("defaults: %+v", p)
	}
}

func TestParseInvalid(t *testing.T) {
	for _, tc := range []struct {
		in    map[string]string
		field string
	}{
		{base(FileSystemID, "<delete>"), FileSystemID},
		{base(FileSystemID, "vol-1"), FileSystemID},
		{base(DirectoryPerms, "<delete>"), DirectoryPerms},
		{base(DirectoryPerms, "800"), DirectoryPerms},
		{base(ProvisioningMode, "<delete>"), ProvisioningMode},
		{base(ProvisioningMode, "efs-dir"), ProvisioningMode},
		{base(GIDRangeStart, "2000", GIDRangeEnd, "1000"), GIDRangeStart},
		{base(GIDRangeStart, "1000"), GIDRangeStart},
		{base(GIDRangeStart, "", GIDRangeEnd, "1000"), GIDRangeStart},
		{base(GIDRangeStart, "1000", GIDRangeEnd, "x"), GIDRangeEnd},
		{base(UID, "-1"), UID},
		{base(GID, "4294967296"), GID},
		{base("color", "blue"), "color"},
		{base(SubPathPattern, "${.PVC.uid}"), SubPathPattern},
		{base(SubPathPattern, "${.PVC.name}"), SubPathPattern}, // no PVC name given
		{base(SubPathPattern, "x/${.PVC.name"), SubPathPattern},
		{base(BasePath, "/a/../b"), BasePath},
		{base(EnsureUniqueDirectory, "maybe"), EnsureUniqueDirectory},
		{base(ReuseAccessPoint, "true"), ReuseAccessPoint},
	} {
		_, err := Parse(tc.in)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("Parse(%v) = %v, want ErrInvalid naming %s", tc.in, err, tc.field)
		}
	}
}

func TestDirectory(t *testing.T) {
	for _, tc := range []struct {
		in   map[string]string
		want string
	}{
		{base(EnsureUniqueDirectory, "false"), "/pv-1"},
		{base(EnsureUniqueDirectory, "false", BasePath, "/dyn"), "/dyn/pv-1"},
		{base(EnsureUniqueDirectory, "false", BasePath, "dyn", SubPathPattern, "${.PVC.namespace}/${.PVC.name}", PVCName, "data", PVCNamespace, "team"), "/dyn/team/data"},
		{base(EnsureUniqueDirectory, "false", SubPathPattern, "${PVC.name}-x", PVCName, "data"), "/data-x"},
		{base(EnsureUniqueDirectory, "false", SubPathPattern, "fixed"), "/fixed"},
		{base(EnsureUniqueDirectory, "false", PVName, "pvc-abc"), "/pvc-abc"},
	} {
		p, err := Parse(tc.in)
		if err != nil {
			t.Fatalf("Parse(%v): %v", tc.in, err)
		}
		got, err := p.Directory("pv-1")
		if err != nil || got != tc.want {
			t.Errorf("Directory(%v) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	p, _ := Parse(base(SubPathPattern, "shared"))
	a, _ := p.Directory("pv-1")
	b, _ := p.Directory("pv-2")
	a2, _ := p.Directory("pv-1")
	if a == b || a != a2 || !strings.HasPrefix(a, "/shared-") {
		t.Errorf("ensureUniqueDirectory: %q %q %q", a, b, a2)
	}
	long, _ := Parse(base(BasePath, "/dyn"))
	l1, err := long.Directory(strings.Repeat("n", 128))
	l2, _ := long.Directory(strings.Repeat("n", 127) + "m")
	if err != nil || len(l1) > 100 || l1 == l2 || !strings.HasPrefix(l1, "/dyn/nnn") {
		t.Errorf("long names: %q %q %v", l1, l2, err)
	}
	p, _ = Parse(base(BasePath, strings.Repeat("x", 99)))
	if _, err := p.Directory("pv-1"); !errors.Is(err, ErrInvalid) {
		t.Errorf("long directory: %v", err)
	}
}

func TestClientToken(t *testing.T) {
	p, _ := Parse(base())
	long := strings.Repeat("n", 128)
	if p.ClientToken("pv-1") != "pv-1" || len(p.ClientToken(long)) != 64 || p.ClientToken(long) != p.ClientToken(long) {
		t.Errorf("tokens: %q %q", p.ClientToken("pv-1"), p.ClientToken(long))
	}
	r, err := Parse(base(ReuseAccessPoint, "true", PVCName, "data"))
	if err != nil {
		t.Fatal(err)
	}
	if r.ClientToken("pv-1") != r.ClientToken("pv-2") || len(r.ClientToken("pv-1")) > 64 {
		t.Errorf("reuse token %q differs by volume name", r.ClientToken("pv-1"))
	}
}
