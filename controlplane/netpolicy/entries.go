package netpolicy

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	pe "github.com/berth-io/berth/api/policyendpoint/v1alpha1"
)

// entrySet collects the entries of one direction. Entries with the same
// CIDR and exceptions allow the same addresses, so they merge into one
// whose ports are the union (an entry for every port absorbs the others).
// Entries with different exceptions never merge: an exception only ever
// narrows the entry it came with.
type entrySet struct {
	entries map[string]*entry
}

type entry struct {
	cidr   netip.Prefix
	except []netip.Prefix
	all    bool
	ports  map[portKey]bool
}

type portKey struct {
	proto corev1.Protocol
	port  int32 // 0: every port of proto
	end   int32 // 0: a single port
}

func newEntrySet() *entrySet { return &entrySet{entries: map[string]*entry{}} }

// add allows cidr minus except on ports (every port when all).
func (s *entrySet) add(cidr netip.Prefix, except []netip.Prefix, all bool, ports []pe.Port) {
	except = slices.Clone(except)
	slices.SortFunc(except, comparePrefix)
	except = slices.Compact(except)
	var key strings.Builder
	key.WriteString(cidr.String())
	for _, e := range except {
		key.WriteString(" " + e.String())
	}
	e, ok := s.entries[key.String()]
	if !ok {
		e = &entry{cidr: cidr, except: except, ports: map[portKey]bool{}}
		s.entries[key.String()] = e
	}
	if all {
		e.all = true
	}
	for _, p := range ports {
		k := portKey{proto: corev1.ProtocolTCP}
		if p.Protocol != nil {
			k.proto = *p.Protocol
		}
		if p.Port != nil {
			k.port = *p.Port
		}
		if p.EndPort != nil && k.port != 0 && *p.EndPort > k.port {
			k.end = *p.EndPort
		}
		e.ports[k] = true
	}
}

// list returns the entries sorted by address, each with its ports sorted;
// nil when there are none.
func (s *entrySet) list() []pe.EndpointInfo {
	es := make([]*entry, 0, len(s.entries))
	for _, e := range s.entries {
		es = append(es, e)
	}
	slices.SortFunc(es, func(a, b *entry) int {
		if c := comparePrefix(a.cidr, b.cidr); c != 0 {
			return c
		}
		return slices.CompareFunc(a.except, b.except, comparePrefix)
	})
	var out []pe.EndpointInfo
	for _, e := range es {
		info := pe.EndpointInfo{CIDR: pe.NetworkAddress(e.cidr.String())}
		for _, x := range e.except {
			info.Except = append(info.Except, pe.NetworkAddress(x.String()))
		}
		if !e.all {
			if info.Ports = portList(e.ports); len(info.Ports) == 0 {
				continue // no ports would read as every port
			}
		}
		out = append(out, info)
	}
	return out
}

// portList sorts ports by protocol, port and range end, leaving out those a
// protocol-wide entry already covers.
func portList(ports map[portKey]bool) []pe.Port {
	keys := make([]portKey, 0, len(ports))
	for k := range ports {
		if k.port != 0 && ports[portKey{proto: k.proto}] {
			continue
		}
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b portKey) int {
		return cmp.Or(cmp.Compare(a.proto, b.proto), cmp.Compare(a.port, b.port), cmp.Compare(a.end, b.end))
	})
	out := make([]pe.Port, 0, len(keys))
	for _, k := range keys {
		p := pe.Port{Protocol: ptr(k.proto)}
		if k.port != 0 {
			p.Port = ptr(k.port)
		}
		if k.end != 0 {
			p.EndPort = ptr(k.end)
		}
		out = append(out, p)
	}
	return out
}

// comparePrefix orders IPv4 before IPv6, then by address, then by length.
func comparePrefix(a, b netip.Prefix) int {
	return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
}
