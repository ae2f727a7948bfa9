package ec2

import (
	"context"
	"crypto/rand"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/berth-io/berth/localcloud/awserr"
)

func eniNotFound(id string) error {
	return awserr.BadRequest("InvalidNetworkInterfaceID.NotFound", "The networkInterface ID '%s' does not exist", id)
}

func newMAC() string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("02:%02x:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3], b[4])
}

// eniSpec is what a new ENI gets; shared by CreateNetworkInterface and
// RunInstances (the primary ENI).
type eniSpec struct {
	Subnet         *Subnet
	Description    string
	Groups         []string
	PrimaryIP      string   // "" = pick one
	SecondaryIPs   []string // specific secondary addresses
	SecondaryCount int
	Prefixes       []string // specific /28s
	PrefixCount    int
	IPv6Count      int
	Tags           Tags
	InterfaceType  string
}

// newENI allocates every address of spec or nothing: on error all
// addresses it took are released again.
func (s *Service) newENI(spec eniSpec, now time.Time) (eni *ENI, err error) {
	sub := spec.Subnet
	id := newID("eni")
	var taken []string
	var takenPrefixes []string
	defer func() {
		if err != nil {
			for _, a := range taken {
				releaseIP(sub, a)
			}
			for _, p := range takenPrefixes {
				releasePrefix(sub, p)
			}
		}
	}()
	if spec.PrimaryIP != "" {
		if err := reserveIP(sub, id, spec.PrimaryIP); err != nil {
			return nil, err
		}
		taken = append(taken, spec.PrimaryIP)
	} else {
		a, err := allocIPs(sub, id, 1)
		if err != nil {
			return nil, err
		}
		taken = append(taken, a...)
	}
	for _, a := range spec.SecondaryIPs {
		if err := reserveIP(sub, id, a); err != nil {
			return nil, err
		}
		taken = append(taken, a)
	}
	more, err := allocIPs(sub, id, spec.SecondaryCount)
	if err != nil {
		return nil, err
	}
	taken = append(taken, more...)
	for _, p := range spec.Prefixes {
		if err := reservePrefix(sub, id, p); err != nil {
			return nil, err
		}
		takenPrefixes = append(takenPrefixes, p)
	}
	prefixes, err := allocPrefixes(sub, id, spec.PrefixCount)
	if err != nil {
		return nil, err
	}
	takenPrefixes = append(takenPrefixes, prefixes...)
	var v6 []string
	if spec.IPv6Count > 0 {
		if v6, err = allocIPv6(sub, id, spec.IPv6Count); err != nil {
			return nil, err
		}
	}
	typ := spec.InterfaceType
	if typ == "" {
		typ = "interface"
	}
	eni = &ENI{ID: id, SubnetID: sub.ID, VPCID: sub.VPCID, AZ: sub.AZ, MAC: newMAC(), Description: spec.Description,
		InterfaceType: typ, SourceDestCheck: true, Groups: spec.Groups, IPv4Prefixes: takenPrefixes, IPv6Addresses: v6,
		CreatedAt: now, Tags: spec.Tags}
	if eni.Tags == nil {
		eni.Tags = Tags{}
	}
	for i, a := range taken {
		eni.PrivateIPs = append(eni.PrivateIPs, PrivateIP{Address: a, Primary: i == 0})
	}
	s.st.ENIs[id] = eni
	return eni, nil
}

// releaseENI returns every address of eni to its subnet and forgets it.
func (s *Service) releaseENI(eni *ENI) {
	s.dropTrunkAssociations(eni.ID)
	if sub := s.st.Subnets[eni.SubnetID]; sub != nil {
		for _, ip := range eni.PrivateIPs {
			releaseIP(sub, ip.Address)
		}
		for _, p := range eni.IPv4Prefixes {
			releasePrefix(sub, p)
		}
		for _, a := range eni.IPv6Addresses {
			delete(sub.IPv6Used, a)
		}
	}
	delete(s.st.ENIs, eni.ID)
}

// groupsFor validates SecurityGroupId.N against the VPC; none means the
// VPC's default group.
func (s *Service) groupsFor(list []string, vpcID string) ([]string, error) {
	if len(list) == 0 {
		for _, sg := range s.st.SecurityGroups {
			if sg.VPCID == vpcID && sg.Name == "default" {
				return []string{sg.ID}, nil
			}
		}
		return nil, nil
	}
	for _, id := range list {
		sg := s.st.SecurityGroups[id]
		if sg == nil {
			return nil, groupNotFound(id)
		}
		if sg.VPCID != vpcID {
			return nil, awserr.InvalidParameterValue("Security group %s and subnet belong to different networks.", id)
		}
	}
	return slices.Clone(list), nil
}

func (s *Service) createENI(ctx context.Context, req *Request) (any, error) {
	p := req.Params
	token := p.Get("ClientToken")
	if id := s.idempotent(req.Action, token); id != "" {
		if e := s.st.ENIs[id]; e != nil {
			return struct {
				ENI         xmlENI `xml:"networkInterface"`
				ClientToken string `xml:"clientToken,omitempty"`
			}{s.renderENI(e), token}, nil
		}
	}
	subID, err := p.Required("SubnetId")
	if err != nil {
		return nil, err
	}
	sub := s.st.Subnets[subID]
	if sub == nil {
		return nil, subnetNotFound(subID)
	}
	groups, err := s.groupsFor(p.List("SecurityGroupId"), sub.VPCID)
	if err != nil {
		return nil, err
	}
	spec := eniSpec{Subnet: sub, Description: p.Get("Description"), Groups: groups, PrimaryIP: p.Get("PrivateIpAddress"), InterfaceType: p.Get("InterfaceType")}
	if err := validInterfaceType(spec.InterfaceType); err != nil {
		return nil, err
	}
	for _, ip := range p.Sub("PrivateIpAddresses") {
		primary, err := ip.Bool("Primary", false)
		if err != nil {
			return nil, err
		}
		a := ip.Get("PrivateIpAddress")
		if primary {
			if spec.PrimaryIP != "" && spec.PrimaryIP != a {
				return nil, awserr.InvalidParameterValue("Only one primary private IP address can be specified")
			}
			spec.PrimaryIP = a
		} else {
			spec.SecondaryIPs = append(spec.SecondaryIPs, a)
		}
	}
	if spec.SecondaryCount, err = p.Int("SecondaryPrivateIpAddressCount", 0); err != nil {
		return nil, err
	}
	if spec.PrefixCount, err = p.Int("Ipv4PrefixCount", 0); err != nil {
		return nil, err
	}
	for _, pp := range p.Sub("Ipv4Prefix") {
		spec.Prefixes = append(spec.Prefixes, pp.Get("Ipv4Prefix"))
	}
	if spec.IPv6Count, err = p.Int("Ipv6AddressCount", 0); err != nil {
		return nil, err
	}
	if spec.SecondaryCount < 0 || spec.PrefixCount < 0 || spec.IPv6Count < 0 {
		return nil, awserr.InvalidParameterValue("Address and prefix counts must not be negative")
	}
	if (spec.SecondaryCount > 0 || len(spec.SecondaryIPs) > 0) && (spec.PrefixCount > 0 || len(spec.Prefixes) > 0) {
		return nil, awserr.InvalidParameterCombination("You cannot specify both IPv4 addresses and IPv4 prefixes")
	}
	// An unattached ENI is bounded by the largest instance type's limits
	// (this also keeps huge counts from reaching the allocators).
	l := unattachedLimits()
	if spec.SecondaryCount > l.ipv4 || spec.PrefixCount > l.ipv4 ||
		1+spec.SecondaryCount+len(spec.SecondaryIPs)+spec.PrefixCount+len(spec.Prefixes) > l.ipv4 {
		return nil, ipv4LimitExceeded()
	}
	if spec.IPv6Count > l.ipv6 {
		return nil, ipv6LimitExceeded()
	}
	if spec.Tags, err = tagsFor(p, "network-interface"); err != nil {
		return nil, err
	}
	e, err := s.newENI(spec, req.now)
	if err != nil {
		return nil, err
	}
	s.rememberToken(req.Action, token, e.ID)
	s.markDirty()
	return struct {
		ENI         xmlENI `xml:"networkInterface"`
		ClientToken string `xml:"clientToken,omitempty"`
	}{s.renderENI(e), token}, nil
}

func eniFilter(s *Service, e *ENI) getter {
	return func(name string) ([]string, bool) {
		a := e.Attachment
		att := func(f func(*ENIAttachment) string) []string {
			if a == nil {
				return nil
			}
			return one(f(a))
		}
		switch name {
		case "network-interface-id":
			return one(e.ID), true
		case "subnet-id":
			return one(e.SubnetID), true
		case "vpc-id":
			return one(e.VPCID), true
		case "availability-zone":
			return one(e.AZ), true
		case "status":
			return one(eniStatus(e)), true
		case "mac-address":
			return one(e.MAC), true
		case "description":
			return []string{e.Description}, true
		case "interface-type":
			return one(e.InterfaceType), true
		case "owner-id":
			return one(s.cfg.Account), true
		case "requester-managed":
			return one(strconv.FormatBool(e.RequesterManaged)), true
		case "source-dest-check":
			return one(strconv.FormatBool(e.SourceDestCheck)), true
		case "group-id":
			return e.Groups, true
		case "group-name":
			var out []string
			for _, g := range e.Groups {
				if sg := s.st.SecurityGroups[g]; sg != nil {
					out = append(out, sg.Name)
				}
			}
			return out, true
		case "private-ip-address", "addresses.private-ip-address":
			var out []string
			for _, ip := range e.PrivateIPs {
				if name == "addresses.private-ip-address" || ip.Primary {
					out = append(out, ip.Address)
				}
			}
			return out, true
		case "private-dns-name":
			for _, ip := range e.PrivateIPs {
				if ip.Primary {
					return one(s.privateDNS(ip.Address)), true
				}
			}
			return nil, true
		case "ipv6-addresses.ipv6-address":
			return e.IPv6Addresses, true
		case "ipv4-prefixes.ipv4-prefix":
			return e.IPv4Prefixes, true
		case "attachment.instance-id":
			return att(func(a *ENIAttachment) string { return a.InstanceID }), true
		case "attachment.attachment-id":
			return att(func(a *ENIAttachment) string { return a.ID }), true
		case "attachment.device-index":
			return att(func(a *ENIAttachment) string { return strconv.Itoa(a.DeviceIndex) }), true
		case "attachment.status":
			return att(func(a *ENIAttachment) string { return a.Status }), true
		case "attachment.delete-on-termination":
			return att(func(a *ENIAttachment) string { return strconv.FormatBool(a.DeleteOnTermination) }), true
		case "attachment.instance-owner-id":
			return att(func(*ENIAttachment) string { return s.cfg.Account }), true
		}
		return nil, false
	}
}

// isFilteredENIDescribe tells the throttle layer whether a
// DescribeNetworkInterfaces call is filtered (a different, larger bucket).
func IsFilteredENIDescribe(p interface{ Has(string) bool }) bool {
	return p.Has("Filter.1.Name") || p.Has("NetworkInterfaceId.1")
}

func (s *Service) describeENIs(ctx context.Context, req *Request) (any, error) {
	filters, err := req.Params.Filters()
	if err != nil {
		return nil, err
	}
	if err := validateFilters(filters, eniFilter(s, &ENI{})); err != nil {
		return nil, err
	}
	want, byID := ids(req.Params, "NetworkInterfaceId")
	if byID && req.Params.Has("MaxResults") {
		return nil, awserr.InvalidParameterCombination("The parameter NetworkInterfaceIds cannot be used with the parameter MaxResults")
	}
	var missing []string
	for id := range want {
		if !strings.HasPrefix(id, "eni-") {
			return nil, awserr.BadRequest("InvalidNetworkInterfaceID.Malformed", "Invalid id: \"%s\" (expecting \"eni-...\")", id)
		}
		if s.st.ENIs[id] == nil {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return nil, awserr.BadRequest("InvalidNetworkInterfaceID.NotFound", "The networkInterface ID '%s' does not exist", strings.Join(missing, ", "))
	}
	var list []*ENI
	for _, e := range s.st.ENIs {
		if (!byID || want[e.ID]) && matches(filters, e.Tags, eniFilter(s, e)) {
			list = append(list, e)
		}
	}
	page, next, err := paginate(list, req.Params, func(e *ENI) string { return e.ID }, 5, 1000)
	if err != nil {
		return nil, err
	}
	out := struct {
		ENIs      []xmlENI `xml:"networkInterfaceSet>item"`
		NextToken string   `xml:"nextToken,omitempty"`
	}{NextToken: next}
	for _, e := range page {
		out.ENIs = append(out.ENIs, s.renderENI(e))
	}
	return out, nil
}
