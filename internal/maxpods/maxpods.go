// Package maxpods is the one resolver for a node's pod density and the
// reservations that follow from it, so kubelet's maxPods and its
// kube-reserved never disagree (the bug nodeadm, AL2 and Karpenter users
// keep hitting: amazon-eks-ami #1698, #2580).
package maxpods

import (
	"fmt"

	"github.com/berth-io/berth/internal/instancetypes"
)

// Mode is how pods get addresses.
type Mode int

const (
	// SecondaryIP: one secondary IPv4 address per pod.
	SecondaryIP Mode = iota
	// PrefixDelegation: /28 prefixes, 16 pods per ENI slot.
	PrefixDelegation
)

func (m Mode) String() string {
	if m == PrefixDelegation {
		return "prefix-delegation"
	}
	return "secondary-ip"
}

// Input is what the resolver needs.
type Input struct {
	Type instancetypes.Info
	Mode Mode
	// CustomNetworking: pods use ENIs in other subnets; the primary ENI
	// carries no pods.
	CustomNetworking bool
	// Explicit is a maxPods the user set (kubelet config); 0 = compute.
	Explicit int
}

// Result is the resolved density and reservations.
type Result struct {
	MaxPods int
	// Source explains where MaxPods came from, for `config explain`.
	Source string
	// KubeReservedMemoryMiB is 11 × maxPods + 255.
	KubeReservedMemoryMiB int
	// KubeReservedCPUMilli follows the usual ladder over vCPUs.
	KubeReservedCPUMilli int
}

// Resolve computes the effective max pods and the reservations from it.
func Resolve(in Input) (Result, error) {
	t := in.Type
	if t.MaxENIs < 1 || t.IPv4PerENI < 2 {
		return Result{}, fmt.Errorf("instance type %q has no usable ENI limits", t.Name)
	}
	var r Result
	switch {
	case in.Explicit > 0:
		r.MaxPods, r.Source = in.Explicit, "kubelet.config.maxPods"
	default:
		enis := t.ENIsPerCard()
		if in.CustomNetworking {
			enis--
		}
		if enis < 1 {
			return Result{}, fmt.Errorf("custom networking on %s leaves no ENI for pods", t.Name)
		}
		switch in.Mode {
		case PrefixDelegation:
			if !t.PrefixDelegation {
				return Result{}, fmt.Errorf("prefix delegation is not supported on %s (%s)", t.Name, t.Hypervisor)
			}
			r.MaxPods = enis*(t.IPv4PerENI-1)*16 + 2
			limit := 250
			if t.VCPUs <= 30 {
				limit = 110
			}
			if r.MaxPods > limit {
				r.MaxPods = limit
			}
			r.Source = fmt.Sprintf("%d ENIs × (%d IPs − 1) × 16 + 2, capped at %d", enis, t.IPv4PerENI, limit)
		default:
			r.MaxPods = enis*(t.IPv4PerENI-1) + 2
			r.Source = fmt.Sprintf("%d ENIs × (%d IPs − 1) + 2", enis, t.IPv4PerENI)
		}
		if in.CustomNetworking {
			r.Source += " (custom networking: primary ENI excluded)"
		}
	}
	r.KubeReservedMemoryMiB = 11*r.MaxPods + 255
	r.KubeReservedCPUMilli = cpuReserved(t.VCPUs)
	return r, nil
}

// cpuReserved is the ladder EKS AMIs use: 6% of the first core, 1% of the
// second, 0.5% of the third and fourth, 0.25% of every core above four.
func cpuReserved(vcpus int) int {
	var m float64
	for c := 1; c <= vcpus; c++ {
		switch {
		case c == 1:
			m += 60
		case c == 2:
			m += 10
		case c <= 4:
			m += 5
		default:
			m += 2.5
		}
	}
	return int(m)
}
