package netpolicy

import (
	"slices"
	"strings"
	"testing"

	pe "github.com/berth-io/berth/api/policyendpoint/v1alpha1"
)

func TestPlanWrites(t *testing.T) {
	np := policy("x", nil, ingressOnly, nil, nil)
	spec := func(ips ...string) []pe.PolicyEndpointSpec {
		s := pe.PolicyEndpointSpec{PolicyRef: pe.PolicyReference{Name: "p", Namespace: "x"}, PodSelector: &np.Spec.PodSelector, PodIsolation: ingressOnly}
		for _, ip := range ips {
			s.Ingress = append(s.Ingress, pe.EndpointInfo{CIDR: pe.NetworkAddress(ip)})
		}
		return Chunk(s, 1)
	}
	gen := func(g int64, specs []pe.PolicyEndpointSpec, only ...int) []*pe.PolicyEndpoint {
		var out []*pe.PolicyEndpoint
		for i, s := range specs {
			if len(only) == 0 || slices.Contains(only, i) {
				out = append(out, chunkObject(np, s, g, i, len(specs)))
			}
		}
		return out
	}
	other := np.DeepCopy()
	other.UID = "uid-of-a-deleted-policy"
	names := func(objs []*pe.PolicyEndpoint) []string {
		var n []string
		for _, o := range objs {
			n = append(n, o.Name)
		}
		slices.Sort(n)
		return n
	}
	desired := spec("10.0.0.1/32", "10.0.0.2/32")
	tests := []struct {
		name       string
		existing   []*pe.PolicyEndpoint
		floor      int64
		unchanged  bool
		gen        int64
		deleteOnly []string
	}{
		{name: "nothing stored", gen: 1},
		{name: "equal: no writes", existing: gen(1, desired), unchanged: true, gen: 1},
		{name: "equal, with a stray partial generation", existing: append(gen(3, desired), gen(4, spec("1.1.1.1/32", "1.1.1.2/32"), 0)...), unchanged: true, gen: 3,
			deleteOnly: []string{"p-4-0"}},
		{name: "changed", existing: gen(1, spec("10.0.0.1/32")), gen: 2},
		{name: "changed, chunk count too", existing: gen(7, spec("10.0.0.1/32", "10.0.0.2/32", "10.0.0.3/32")), gen: 8},
		{name: "incomplete newest generation does not count", existing: gen(2, desired, 0), gen: 3},
		{name: "generations only go up: floor", existing: gen(2, spec("10.0.0.9/32")), floor: 5, gen: 6},
		{name: "chunks of a re-created policy's predecessor", existing: []*pe.PolicyEndpoint{chunkObject(other, desired[0], 1, 0, 2), chunkObject(other, desired[1], 1, 1, 2)}, gen: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := planWrites(np, desired, tc.existing, tc.floor)
			if p.unchanged != tc.unchanged || p.gen != tc.gen {
				t.Fatalf("unchanged %v gen %d, want %v %d", p.unchanged, p.gen, tc.unchanged, tc.gen)
			}
			if tc.unchanged {
				if len(p.create) != 0 || !slices.Equal(p.delete, tc.deleteOnly) {
					t.Fatalf("create %d delete %v, want none and %v", len(p.create), p.delete, tc.deleteOnly)
				}
				return
			}
			// Every old object goes, after the whole new generation exists.
			if !slices.Equal(p.delete, names(tc.existing)) {
				t.Errorf("delete %v, want %v", p.delete, names(tc.existing))
			}
			if len(p.create) != len(desired) {
				t.Fatalf("create %d chunks, want %d", len(p.create), len(desired))
			}
			for i, obj := range p.create {
				s := parseStored(obj)
				if s.gen != tc.gen || s.count != len(desired) || s.index != i || !ownedBy(obj, np) ||
					obj.Labels[pe.LabelPolicyName] != "p" || obj.Namespace != "x" || slices.Contains(p.delete, obj.Name) {
					t.Errorf("chunk %d: %+v", i, obj.ObjectMeta)
				}
			}
			// Written and read back, the new generation is what is desired.
			if again := planWrites(np, desired, p.create, 0); !again.unchanged || len(again.delete) != 0 {
				t.Errorf("the written generation is not recognised as current")
			}
		})
	}
}

func TestNames(t *testing.T) {
	long := strings.Repeat("a", 250)
	n := ObjectName(long, 12, 3)
	if len(n) > 253 || !strings.HasSuffix(n, "-12-3") || n == ObjectName(long+"b", 12, 3) {
		t.Errorf("long object name %q", n)
	}
	if ObjectName("web", 1, 0) != "web-1-0" {
		t.Errorf("short name %q", ObjectName("web", 1, 0))
	}
	if v := pe.PolicyLabelValue(strings.Repeat("b", 100)); len(v) > 63 || v == pe.PolicyLabelValue(strings.Repeat("b", 99)) {
		t.Errorf("label value %q", v)
	}
}
