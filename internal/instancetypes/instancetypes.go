// Package instancetypes is the table of EC2 instance-type facts that
// localcloud (DescribeInstanceTypes, limit enforcement) and the node
// components (max pods, warm-pool sizing) share, so no API call is needed
// for a known type. The table is generated from data/instance-types.csv:
//
//	go generate ./internal/instancetypes
//
// It holds facts only; policy such as the max-pods formula lives with the
// component that owns it.
package instancetypes

import "sort"

//go:generate go run ./gen -in data/instance-types.csv -out zz_generated_types.go

// Info describes one instance type.
type Info struct {
	Name         string
	VCPUs        int
	MemoryMiB    int64
	Hypervisor   string // "nitro" or "xen"
	BareMetal    bool
	Architecture string // "x86_64" or "arm64"
	NetworkCards int
	// MaxENIs is maximumNetworkInterfaces; IPv4PerENI counts the primary
	// address too.
	MaxENIs       int
	IPv4PerENI    int
	IPv6PerENI    int
	IPv6Supported bool
	// PrefixDelegation: /28 IPv4 prefixes can be assigned to ENIs (Nitro).
	PrefixDelegation bool
	// MaxEBSAttachments is how many volumes can be attached. When
	// EBSSharedWithENIs is set it is the Nitro limit of 28 that attached
	// ENIs (and NVMe instance store volumes) use up too.
	MaxEBSAttachments  int
	EBSSharedWithENIs  bool
	NetworkPerformance string
}

// ENIsPerCard is how many ENIs one network card takes: the instance's
// limit split evenly over its cards, as EC2 splits it on every
// multi-card type. Pod density counts card 0 only, as EKS does.
func (i Info) ENIsPerCard() int {
	if i.NetworkCards <= 1 {
		return i.MaxENIs
	}
	return i.MaxENIs / i.NetworkCards
}

var byName = func() map[string]Info {
	m := make(map[string]Info, len(table))
	for _, i := range table {
		m[i.Name] = i
	}
	return m
}()

// Lookup returns the facts of an instance type.
func Lookup(name string) (Info, bool) {
	i, ok := byName[name]
	return i, ok
}

// All returns every known type, sorted by name.
func All() []Info {
	out := append([]Info(nil), table...)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
