// Package podroute holds the numbers of the Amazon VPC CNI's pod datapath
// that both berth-ipamd (through internal/podnet) and berth-cni use: the
// pod gateway, the rule priorities, the main table. It imports no netlink
// library, so berth-cni can use it without linking one.
package podroute

import "net"

// Rule priorities and the main table.
const (
	ToPodPriority   = 512  // to <pod> lookup main
	FromPodPriority = 1536 // from <pod> lookup <ENI table>, for a secondary ENI's address
	MainTable       = 254  // RT_TABLE_MAIN
)

// Gateway is every pod's next hop, answered by the host veth's MAC.
var Gateway = net.IPv4(169, 254, 1, 1).To4()

// GatewayOf is the gateway of a multi-NIC pod's interface i (0 for eth0):
// 169.254.1.(i+1), as the VPC CNI numbers them.
func GatewayOf(i int) net.IP { return net.IPv4(169, 254, 1, byte(i+1)).To4() }

// HostNet is ip/32.
func HostNet(ip net.IP) *net.IPNet { return &net.IPNet{IP: ip.To4(), Mask: net.CIDRMask(32, 32)} }
