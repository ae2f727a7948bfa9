package datapath

import "net/netip"

// Protocol numbers a PortRange can name.
const (
	ProtoAny  uint8 = 0
	ProtoTCP  uint8 = 6
	ProtoUDP  uint8 = 17
	ProtoSCTP uint8 = 132
)

// PortRange is one protocol's ports Start..End inclusive; Start 0 means
// every port of the protocol. Protocol ProtoAny with Start 0 is everything.
type PortRange struct {
	Protocol   uint8
	Start, End uint16
}

// Rule allows traffic to or from the peers in CIDRs minus Except on Ports.
// A rule is evaluated on its own: its Except never removes what another rule
// allows. AnyPeer allows every address; empty Ports allow every protocol and
// port. ID is the caller's attribution, reported in verdict logs.
//
// Shared (with a non-zero ID) declares the ID stable node-wide: every rule
// with this ID in any Apply carries the same CIDRs and Except at the time
// of the call, and an Apply with new CIDRs or Except for the ID is the new
// content for every pod whose policy has it. Pods whose merged rules (same
// direction and ports) come from the same set of shared IDs then share one
// peer set, and an Apply that changes it updates it for all of them (see
// netpol/README.md). Rules without Shared, or with ID 0, get a peer set of
// their pod's own.
type Rule struct {
	ID      uint32
	Shared  bool
	AnyPeer bool
	CIDRs   []netip.Prefix
	Except  []netip.Prefix
	Ports   []PortRange
}

// Direction is one direction of a pod's policy. When Isolated is false the
// direction allows everything and Rules are ignored; when true only traffic
// some rule allows passes (no rules: deny all).
type Direction struct {
	Isolated bool
	Rules    []Rule
}

// Policy is everything enforced for one pod.
type Policy struct {
	Ingress, Egress Direction
}

// AllowAll is the policy of a pod no NetworkPolicy selects.
var AllowAll = Policy{}

// DenyAll isolates both directions with no rules (strict mode before a
// pod's policies are known).
var DenyAll = Policy{Ingress: Direction{Isolated: true}, Egress: Direction{Isolated: true}}
