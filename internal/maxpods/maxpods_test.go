package maxpods

import (
	"testing"

	"github.com/berth-io/berth/internal/instancetypes"
)

func TestPublishedValues(t *testing.T) {
	for _, tc := range []struct {
		typ      string
		mode     Mode
		custom   bool
		explicit int
		want     int
	}{
		// misc/eni-max-pods.txt of the Amazon VPC CNI.
		{"m5.large", SecondaryIP, false, 0, 29},
		{"t3.small", SecondaryIP, false, 0, 11},
		{"t3.nano", SecondaryIP, false, 0, 4},
		{"c5.18xlarge", SecondaryIP, false, 0, 737},
		{"m5.4xlarge", SecondaryIP, false, 0, 234},
		// max-pods-calculator.sh with prefix delegation.
		{"m5.large", PrefixDelegation, false, 0, 110},
		{"c5.18xlarge", PrefixDelegation, false, 0, 250},
		{"t3.nano", PrefixDelegation, false, 0, 34},
		// Custom networking drops the primary ENI.
		{"m5.large", SecondaryIP, true, 0, 20},
		{"m5.large", SecondaryIP, false, 58, 58},
	} {
		info, ok := instancetypes.Lookup(tc.typ)
		if !ok {
			t.Fatalf("%s not in the table", tc.typ)
		}
		r, err := Resolve(Input{Type: info, Mode: tc.mode, CustomNetworking: tc.custom, Explicit: tc.explicit})
		if err != nil {
			t.Fatalf("%s: %v", tc.typ, err)
		}
		if r.MaxPods != tc.want {
			t.Errorf("%s %v custom=%v explicit=%d: max pods %d, want %d (%s)", tc.typ, tc.mode, tc.custom, tc.explicit, r.MaxPods, tc.want, r.Source)
		}
		// The reservation follows the effective value, including an explicit one.
		if r.KubeReservedMemoryMiB != 11*tc.want+255 {
			t.Errorf("%s: kube-reserved memory %d, want %d", tc.typ, r.KubeReservedMemoryMiB, 11*tc.want+255)
		}
	}
}

func TestCPULadder(t *testing.T) {
	for vcpus, want := range map[int]int{1: 60, 2: 70, 4: 80, 8: 90, 96: 310} {
		if got := cpuReserved(vcpus); got != want {
			t.Errorf("%d vCPUs: %dm, want %dm", vcpus, got, want)
		}
	}
}

func TestUnsupported(t *testing.T) {
	xen, _ := instancetypes.Lookup("t2.micro")
	if _, err := Resolve(Input{Type: xen, Mode: PrefixDelegation}); err == nil {
		t.Error("prefix delegation on a Xen type accepted")
	}
	nano, _ := instancetypes.Lookup("t3.nano")
	nano.MaxENIs = 1
	if _, err := Resolve(Input{Type: nano, CustomNetworking: true}); err == nil {
		t.Error("custom networking with one ENI accepted")
	}
}
