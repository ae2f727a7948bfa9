package ec2

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/berth-io/berth/localcloud/awserr"
)

// Address allocation follows EC2: in every subnet the first four addresses
// (network, router, DNS, reserved) and the last (broadcast) are never
// handed out; free addresses are picked at random, so secondary IPs scatter
// and /28 prefixes can run out before addresses do (fragmentation), as on
// AWS. A /28 prefix needs 16 aligned free addresses.

func subnetPrefix(sub *Subnet) netip.Prefix {
	return netip.MustParsePrefix(sub.CIDR)
}

func subnetSize(sub *Subnet) int { return 1 << (32 - subnetPrefix(sub).Bits()) }

func addrAt(p netip.Prefix, i int) netip.Addr {
	b := p.Masked().Addr().As4()
	n := binary.BigEndian.Uint32(b[:]) + uint32(i)
	binary.BigEndian.PutUint32(b[:], n)
	return netip.AddrFrom4(b)
}

func offsetOf(p netip.Prefix, a netip.Addr) int {
	base := p.Masked().Addr().As4()
	x := a.As4()
	return int(binary.BigEndian.Uint32(x[:]) - binary.BigEndian.Uint32(base[:]))
}

func reservedOffset(size, off int) bool { return off < 4 || off == size-1 }

// availableIPs is what DescribeSubnets reports.
func availableIPs(sub *Subnet) int {
	if sub.ExhaustedByFault {
		return 0
	}
	return subnetSize(sub) - 5 - len(sub.Used)
}

func randIntn(n int) int {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return int(binary.BigEndian.Uint64(b[:]) % uint64(n))
}

// allocIPs takes n random free addresses for owner.
func allocIPs(sub *Subnet, owner string, n int) ([]string, error) {
	if n <= 0 {
		return nil, nil
	}
	if availableIPs(sub) < n {
		return nil, awserr.BadRequest("InsufficientFreeAddressesInSubnet", "The specified subnet does not have enough free addresses to satisfy the request.")
	}
	p := subnetPrefix(sub)
	size := subnetSize(sub)
	var free []int
	for off := 4; off < size-1; off++ {
		if _, used := sub.Used[addrAt(p, off).String()]; !used {
			free = append(free, off)
		}
	}
	out := make([]string, 0, n)
	for i := 0; i < n; i++ {
		j := i + randIntn(len(free)-i)
		free[i], free[j] = free[j], free[i]
		a := addrAt(p, free[i]).String()
		sub.Used[a] = owner
		out = append(out, a)
	}
	return out, nil
}

// reserveIP takes a specific address for owner.
func reserveIP(sub *Subnet, owner, addr string) error {
	a, err := netip.ParseAddr(addr)
	if err != nil || !a.Is4() {
		return awserr.InvalidParameterValue("Invalid IPv4 address: %s", addr)
	}
	p := subnetPrefix(sub)
	if !p.Contains(a) {
		return awserr.InvalidParameterValue("Address %s does not fall within the subnet's address range", addr)
	}
	if reservedOffset(subnetSize(sub), offsetOf(p, a)) {
		return awserr.InvalidParameterValue("Address %s is reserved by AWS in subnet %s", addr, sub.ID)
	}
	if _, used := sub.Used[addr]; used {
		return awserr.BadRequest("InvalidIPAddress.InUse", "Address %s is in use.", addr)
	}
	if sub.ExhaustedByFault {
		return awserr.BadRequest("InsufficientFreeAddressesInSubnet", "The specified subnet does not have enough free addresses to satisfy the request.")
	}
	sub.Used[addr] = owner
	return nil
}

// allocPrefixes takes n random aligned /28 blocks that are entirely free.
func allocPrefixes(sub *Subnet, owner string, n int) ([]string, error) {
	if n <= 0 {
		return nil, nil
	}
	p := subnetPrefix(sub)
	size := subnetSize(sub)
	var free []int
	if !sub.ExhaustedByFault {
	blocks:
		for start := 0; start+16 <= size; start += 16 {
			for off := start; off < start+16; off++ {
				if reservedOffset(size, off) {
					continue blocks
				}
				if _, used := sub.Used[addrAt(p, off).String()]; used {
					continue blocks
				}
			}
			free = append(free, start)
		}
	}
	if len(free) < n {
		return nil, awserr.BadRequest("InsufficientCidrBlocks", "There are not enough free cidr blocks in the specified subnet to satisfy the request.")
	}
	out := make([]string, 0, n)
	for i := 0; i < n; i++ {
		j := i + randIntn(len(free)-i)
		free[i], free[j] = free[j], free[i]
		for off := free[i]; off < free[i]+16; off++ {
			sub.Used[addrAt(p, off).String()] = owner
		}
		out = append(out, netip.PrefixFrom(addrAt(p, free[i]), 28).String())
	}
	return out, nil
}

// reservePrefix takes a specific /28 for owner.
func reservePrefix(sub *Subnet, owner, prefix string) error {
	pp, err := netip.ParsePrefix(prefix)
	if err != nil || !pp.Addr().Is4() || pp.Bits() != 28 || pp.Masked() != pp {
		return awserr.InvalidParameterValue("Invalid IPv4 prefix: %s (must be an aligned /28)", prefix)
	}
	p := subnetPrefix(sub)
	if !p.Contains(pp.Addr()) {
		return awserr.InvalidParameterValue("Prefix %s does not fall within the subnet's address range", prefix)
	}
	if sub.ExhaustedByFault {
		return awserr.BadRequest("InsufficientCidrBlocks", "There are not enough free cidr blocks in the specified subnet to satisfy the request.")
	}
	start := offsetOf(p, pp.Addr())
	for off := start; off < start+16; off++ {
		a := addrAt(p, off).String()
		if _, used := sub.Used[a]; used || reservedOffset(subnetSize(sub), off) {
			return awserr.BadRequest("InvalidParameterValue", "Prefix %s overlaps addresses in use in subnet %s", prefix, sub.ID)
		}
	}
	for off := start; off < start+16; off++ {
		sub.Used[addrAt(p, off).String()] = owner
	}
	return nil
}

// releaseIP frees one address.
func releaseIP(sub *Subnet, addr string) { delete(sub.Used, addr) }

// releasePrefix frees the 16 addresses of a /28.
func releasePrefix(sub *Subnet, prefix string) {
	pp, err := netip.ParsePrefix(prefix)
	if err != nil {
		return
	}
	p := subnetPrefix(sub)
	start := offsetOf(p, pp.Addr())
	for off := start; off < start+16; off++ {
		delete(sub.Used, addrAt(p, off).String())
	}
}

// allocIPv6 hands out n addresses from the subnet's IPv6 /64.
func allocIPv6(sub *Subnet, owner string, n int) ([]string, error) {
	if sub.IPv6CIDR == "" {
		return nil, awserr.InvalidParameterValue("Subnet %s has no IPv6 CIDR block", sub.ID)
	}
	if sub.IPv6Used == nil {
		sub.IPv6Used = map[string]string{}
	}
	p := netip.MustParsePrefix(sub.IPv6CIDR)
	out := make([]string, 0, n)
	for len(out) < n {
		b := p.Addr().As16()
		var r [8]byte
		_, _ = rand.Read(r[:])
		copy(b[8:], r[:])
		a := netip.AddrFrom16(b).String()
		if _, used := sub.IPv6Used[a]; used {
			continue
		}
		sub.IPv6Used[a] = owner
		out = append(out, a)
	}
	return out, nil
}

// cidrContains reports whether child lies inside parent.
func cidrContains(parent, child netip.Prefix) bool {
	return parent.Bits() <= child.Bits() && parent.Contains(child.Addr())
}

// ipv6SubnetOf returns the i-th /64 of a VPC's /56.
func ipv6SubnetOf(vpcCIDR string, i int) (string, error) {
	p, err := netip.ParsePrefix(vpcCIDR)
	if err != nil {
		return "", fmt.Errorf("vpc ipv6 cidr %q: %w", vpcCIDR, err)
	}
	b := p.Masked().Addr().As16()
	b[7] = byte(i)
	return netip.PrefixFrom(netip.AddrFrom16(b), 64).String(), nil
}
