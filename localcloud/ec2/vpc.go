package ec2

import (
	"context"
	"net/netip"
	"slices"
	"strconv"

	"github.com/berth-io/berth/localcloud/awserr"
)

func (s *Service) vpcHandlers() map[string]handler {
	return map[string]handler{
		"CreateVpc":                 s.createVPC,
		"DescribeVpcs":              s.describeVPCs,
		"DeleteVpc":                 s.deleteVPC,
		"AssociateVpcCidrBlock":     s.associateVPCCIDR,
		"DisassociateVpcCidrBlock":  s.disassociateVPCCIDR,
		"CreateSubnet":              s.createSubnet,
		"DescribeSubnets":           s.describeSubnets,
		"DeleteSubnet":              s.deleteSubnet,
		"CreateSecurityGroup":       s.createSecurityGroup,
		"DescribeSecurityGroups":    s.describeSecurityGroups,
		"DeleteSecurityGroup":       s.deleteSecurityGroup,
		"DescribeAvailabilityZones": s.describeAZs,
	}
}

func vpcNotFound(id string) error {
	return awserr.BadRequest("InvalidVpcID.NotFound", "The vpc ID '%s' does not exist", id)
}

func subnetNotFound(id string) error {
	return awserr.BadRequest("InvalidSubnetID.NotFound", "The subnet ID '%s' does not exist", id)
}

func groupNotFound(id string) error {
	return awserr.BadRequest("InvalidGroup.NotFound", "The security group '%s' does not exist", id)
}

// parseIPv4CIDR validates a VPC or subnet block: /16 to /28, as EC2 allows.
func parseIPv4CIDR(v string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(v)
	if err != nil || !p.Addr().Is4() {
		return netip.Prefix{}, awserr.InvalidParameterValue("Value (%s) for parameter cidrBlock is invalid. This is not a valid CIDR block.", v)
	}
	if p.Bits() < 16 || p.Bits() > 28 {
		return netip.Prefix{}, awserr.InvalidParameterValue("The CIDR '%s' is invalid: the netmask must be between /16 and /28.", v)
	}
	if p.Masked() != p {
		return netip.Prefix{}, awserr.InvalidParameterValue("Value (%s) for parameter cidrBlock is invalid. This is not a valid CIDR block.", v)
	}
	return p, nil
}

func (s *Service) createVPC(ctx context.Context, req *Request) (any, error) {
	cidr, err := req.Params.Required("CidrBlock")
	if err != nil {
		return nil, err
	}
	p, err := parseIPv4CIDR(cidr)
	if err != nil {
		return nil, err
	}
	ipv6, err := req.Params.Bool("AmazonProvidedIpv6CidrBlock", false)
	if err != nil {
		return nil, err
	}
	tags, err := tagsFor(req.Params, "vpc")
	if err != nil {
		return nil, err
	}
	v := &VPC{ID: newID("vpc"), CIDR: p.String(), Tags: tags}
	if ipv6 {
		// A /56 from the documentation-adjacent 2600:1f14::/40 space AWS uses in us-west-2.
		v.IPv6CIDR = "2600:1f14:" + strconv.FormatInt(int64(0x1000+randIntn(0xefff)), 16) + ":" + strconv.FormatInt(int64(randIntn(256)), 16) + "00::/56"
	}
	s.st.VPCs[v.ID] = v
	sg := &SecurityGroup{ID: newID("sg"), Name: "default", Description: "default VPC security group", VPCID: v.ID, Tags: Tags{}}
	s.st.SecurityGroups[sg.ID] = sg
	s.markDirty()
	return struct {
		VPC xmlVPC `xml:"vpc"`
	}{s.renderVPC(v)}, nil
}

func vpcFilter(s *Service, v *VPC) getter {
	return func(name string) ([]string, bool) {
		switch name {
		case "vpc-id":
			return one(v.ID), true
		case "cidr", "cidrBlock":
			return one(v.CIDR), true
		case "cidr-block-association.cidr-block":
			return v.IPv4CIDRs(), true
		case "cidr-block-association.association-id":
			var ids []string
			for _, a := range v.associations() {
				ids = append(ids, a.ID)
			}
			return ids, true
		case "cidr-block-association.state":
			return one("associated"), true
		case "ipv6-cidr-block-association.ipv6-cidr-block":
			return one(v.IPv6CIDR), true
		case "state":
			return one("available"), true
		case "is-default":
			return one(strconv.FormatBool(v.IsDefault)), true
		case "owner-id":
			return one(s.cfg.Account), true
		}
		return nil, false
	}
}

func (s *Service) describeVPCs(ctx context.Context, req *Request) (any, error) {
	filters, err := req.Params.Filters()
	if err != nil {
		return nil, err
	}
	if err := validateFilters(filters, vpcFilter(s, &VPC{})); err != nil {
		return nil, err
	}
	want, byID := ids(req.Params, "VpcId")
	for id := range want {
		if s.st.VPCs[id] == nil {
			return nil, vpcNotFound(id)
		}
	}
	var list []*VPC
	for _, v := range s.st.VPCs {
		if (!byID || want[v.ID]) && matches(filters, v.Tags, vpcFilter(s, v)) {
			list = append(list, v)
		}
	}
	page, next, err := paginate(list, req.Params, func(v *VPC) string { return v.ID }, 5, 1000)
	if err != nil {
		return nil, err
	}
	out := struct {
		VPCs      []xmlVPC `xml:"vpcSet>item"`
		NextToken string   `xml:"nextToken,omitempty"`
	}{NextToken: next}
	for _, v := range page {
		out.VPCs = append(out.VPCs, s.renderVPC(v))
	}
	return out, nil
}

func (s *Service) deleteVPC(ctx context.Context, req *Request) (any, error) {
	id, err := req.Params.Required("VpcId")
	if err != nil {
		return nil, err
	}
	if s.st.VPCs[id] == nil {
		return nil, vpcNotFound(id)
	}
	for _, sub := range s.st.Subnets {
		if sub.VPCID == id {
			return nil, awserr.BadRequest("DependencyViolation", "The vpc '%s' has dependencies and cannot be deleted.", id)
		}
	}
	for sgID, sg := range s.st.SecurityGroups {
		if sg.VPCID == id {
			if sg.Name != "default" {
				return nil, awserr.BadRequest("DependencyViolation", "The vpc '%s' has dependencies and cannot be deleted.", id)
			}
			defer delete(s.st.SecurityGroups, sgID)
		}
	}
	delete(s.st.VPCs, id)
	s.markDirty()
	return returnTrue(), nil
}

// maxVPCIPv4CIDRs is EC2's default quota of IPv4 blocks per VPC, the
// primary included.
const maxVPCIPv4CIDRs = 5

// restrictedBlock reports a block EC2 does not let a VPC with primary
// block primary add: one in a reserved range (this network, loopback,
// link-local, multicast and above); an RFC 1918 range other than the
// primary's, or any RFC 1918 range for a primary outside them (public, or
// 100.64.0.0/10); and 198.19.0.0/16 for an RFC 1918 primary.
func restrictedBlock(primary, p netip.Prefix) bool {
	for _, r := range []string{"0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/3"} {
		if netip.MustParsePrefix(r).Overlaps(p) {
			return true
		}
	}
	private := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("172.16.0.0/12"), netip.MustParsePrefix("192.168.0.0/16")}
	primaryPrivate := slices.ContainsFunc(private, func(r netip.Prefix) bool { return r.Overlaps(primary) })
	for _, r := range private {
		if r.Overlaps(p) && !r.Overlaps(primary) {
			return true
		}
	}
	return primaryPrivate && netip.MustParsePrefix("198.19.0.0/16").Overlaps(p)
}

// xmlCIDRAssocResult is the answer of AssociateVpcCidrBlock and
// DisassociateVpcCidrBlock.
type xmlCIDRAssocResult struct {
	VpcID string       `xml:"vpcId"`
	Assoc xmlCIDRAssoc `xml:"cidrBlockAssociation"`
}

// associateVPCCIDR adds a secondary IPv4 block to a VPC. The association is
// complete at once; the answer says "associating", as EC2's does, and
// DescribeVpcs "associated". IPv6 and IPAM pools are not offered.
func (s *Service) associateVPCCIDR(ctx context.Context, req *Request) (any, error) {
	id, err := req.Params.Required("VpcId")
	if err != nil {
		return nil, err
	}
	vpc := s.st.VPCs[id]
	if vpc == nil {
		return nil, vpcNotFound(id)
	}
	for _, p := range []string{"AmazonProvidedIpv6CidrBlock", "Ipv6Pool", "Ipv6CidrBlock", "Ipv4IpamPoolId", "Ipv6IpamPoolId"} {
		if req.Params.Get(p) != "" {
			return nil, awserr.BadRequest("UnsupportedOperation", "localcloud associates IPv4 CIDR blocks only (%s)", p)
		}
	}
	cidr, err := req.Params.Required("CidrBlock")
	if err != nil {
		return nil, err
	}
	p, err := parseIPv4CIDR(cidr)
	if err != nil {
		if pp, perr := netip.ParsePrefix(cidr); perr == nil && pp.Addr().Is4() && pp.Masked() == pp {
			return nil, awserr.BadRequest("InvalidVpc.Range", "The CIDR '%s' is invalid: a CIDR block must be between a /16 and a /28 netmask.", cidr)
		}
		return nil, err
	}
	current := vpc.IPv4CIDRs()
	for _, c := range current {
		if netip.MustParsePrefix(c).Overlaps(p) {
			return nil, awserr.BadRequest("InvalidVpc.Range", "The CIDR '%s' conflicts with another CIDR block (%s) of the VPC.", cidr, c)
		}
	}
	if restrictedBlock(netip.MustParsePrefix(vpc.CIDR), p) {
		return nil, awserr.BadRequest("InvalidVpc.Range", "The CIDR '%s' is restricted. Use a CIDR from the same private address range as the current VPC CIDR, or use a publicly-routable CIDR.", cidr)
	}
	if len(current) >= maxVPCIPv4CIDRs {
		return nil, awserr.BadRequest("CidrLimitExceeded", "This network '%s' has met its maximum number of allowed CIDRs: %d", id, maxVPCIPv4CIDRs)
	}
	a := CIDRAssociation{ID: newID("vpc-cidr-assoc"), CIDR: p.String()}
	vpc.Secondary = append(vpc.Secondary, a)
	s.markDirty()
	return xmlCIDRAssocResult{VpcID: id, Assoc: xmlCIDRAssoc{a.ID, a.CIDR, "associating"}}, nil
}

// disassociateVPCCIDR removes a secondary block that no subnet uses.
func (s *Service) disassociateVPCCIDR(ctx context.Context, req *Request) (any, error) {
	assoc, err := req.Params.Required("AssociationId")
	if err != nil {
		return nil, err
	}
	for _, vpc := range s.st.VPCs {
		if assoc == vpc.primaryAssociation() {
			return nil, awserr.BadRequest("OperationNotPermitted", "The vpc CIDR block with association ID %s may not be disassociated. It is the primary IPv4 CIDR block of the VPC", assoc)
		}
		if vpc.IPv6CIDR != "" && assoc == vpc.ipv6Association() {
			return nil, awserr.BadRequest("UnsupportedOperation", "localcloud does not disassociate a VPC's IPv6 block (%s)", assoc)
		}
		i := slices.IndexFunc(vpc.Secondary, func(a CIDRAssociation) bool { return a.ID == assoc })
		if i < 0 {
			continue
		}
		a := vpc.Secondary[i]
		block := netip.MustParsePrefix(a.CIDR)
		for _, sub := range s.st.Subnets {
			if sub.VPCID == vpc.ID && block.Overlaps(netip.MustParsePrefix(sub.CIDR)) {
				return nil, awserr.BadRequest("InvalidCidrBlock.InUse", "The vpc %s currently has a subnet (%s) within CIDR block %s", vpc.ID, sub.ID, a.CIDR)
			}
		}
		vpc.Secondary = slices.Delete(vpc.Secondary, i, i+1)
		s.markDirty()
		return xmlCIDRAssocResult{VpcID: vpc.ID, Assoc: xmlCIDRAssoc{a.ID, a.CIDR, "disassociating"}}, nil
	}
	return nil, awserr.BadRequest("InvalidVpcCidrBlockAssociationID.NotFound", "The vpc CIDR block association ID '%s' does not exist", assoc)
}

func returnTrue() any {
	return struct {
		Return bool `xml:"return"`
	}{true}
}

func (s *Service) createSubnet(ctx context.Context, req *Request) (any, error) {
	vpcID, err := req.Params.Required("VpcId")
	if err != nil {
		return nil, err
	}
	cidr, err := req.Params.Required("CidrBlock")
	if err != nil {
		return nil, err
	}
	vpc := s.st.VPCs[vpcID]
	if vpc == nil {
		return nil, vpcNotFound(vpcID)
	}
	p, err := parseIPv4CIDR(cidr)
	if err != nil {
		return nil, err
	}
	if !slices.ContainsFunc(vpc.IPv4CIDRs(), func(c string) bool { return cidrContains(netip.MustParsePrefix(c), p) }) {
		return nil, awserr.BadRequest("InvalidSubnet.Range", "The CIDR '%s' is invalid.", cidr)
	}
	for _, other := range s.st.Subnets {
		if other.VPCID == vpcID && netip.MustParsePrefix(other.CIDR).Overlaps(p) {
			return nil, awserr.BadRequest("InvalidSubnet.Conflict", "The CIDR '%s' conflicts with another subnet", cidr)
		}
	}
	az := req.Params.Get("AvailabilityZone")
	if azid := req.Params.Get("AvailabilityZoneId"); az == "" && azid != "" {
		for _, z := range s.cfg.AZs {
			if s.azID(z) == azid {
				az = z
			}
		}
		if az == "" {
			return nil, awserr.InvalidParameterValue("Value (%s) for parameter availabilityZoneId is invalid.", azid)
		}
	}
	if az == "" {
		az = s.cfg.AZs[randIntn(len(s.cfg.AZs))]
	}
	if !slices.Contains(s.cfg.AZs, az) {
		return nil, awserr.InvalidParameterValue("Value (%s) for parameter availabilityZone is invalid. Subnets can currently only be created in the following availability zones: %v.", az, s.cfg.AZs)
	}
	tags, err := tagsFor(req.Params, "subnet")
	if err != nil {
		return nil, err
	}
	sub := &Subnet{ID: newID("subnet"), VPCID: vpcID, CIDR: p.String(), AZ: az, Tags: tags, Used: map[string]string{}}
	if v6 := req.Params.Get("Ipv6CidrBlock"); v6 != "" {
		if vpc.IPv6CIDR == "" {
			return nil, awserr.InvalidParameterValue("VPC %s has no IPv6 CIDR block", vpcID)
		}
		pp, err := netip.ParsePrefix(v6)
		if err != nil || pp.Bits() != 64 || !cidrContains(netip.MustParsePrefix(vpc.IPv6CIDR), pp) {
			return nil, awserr.BadRequest("InvalidSubnet.Range", "The IPv6 CIDR '%s' is invalid.", v6)
		}
		sub.IPv6CIDR = pp.String()
	} else if vpc.IPv6CIDR != "" {
		v6, err := ipv6SubnetOf(vpc.IPv6CIDR, vpc.IPv6Next)
		if err != nil {
			return nil, awserr.As(err)
		}
		vpc.IPv6Next++
		sub.IPv6CIDR = v6
	}
	s.st.Subnets[sub.ID] = sub
	s.markDirty()
	return struct {
		Subnet xmlSubnet `xml:"subnet"`
	}{s.renderSubnet(sub)}, nil
}

func subnetFilter(s *Service, sub *Subnet) getter {
	return func(name string) ([]string, bool) {
		switch name {
		case "subnet-id":
			return one(sub.ID), true
		case "vpc-id":
			return one(sub.VPCID), true
		case "cidr-block", "cidr", "cidrBlock":
			return one(sub.CIDR), true
		case "availability-zone", "availabilityZone":
			return one(sub.AZ), true
		case "availability-zone-id":
			return one(s.azID(sub.AZ)), true
		case "state":
			return one("available"), true
		case "ipv6-cidr-block-association.ipv6-cidr-block":
			return one(sub.IPv6CIDR), true
		case "available-ip-address-count":
			return one(strconv.Itoa(availableIPs(sub))), true
		case "default-for-az":
			return one("false"), true
		case "owner-id":
			return one(s.cfg.Account), true
		}
		return nil, false
	}
}

func (s *Service) describeSubnets(ctx context.Context, req *Request) (any, error) {
	filters, err := req.Params.Filters()
	if err != nil {
		return nil, err
	}
	if err := validateFilters(filters, subnetFilter(s, &Subnet{})); err != nil {
		return nil, err
	}
	want, byID := ids(req.Params, "SubnetId")
	for id := range want {
		if s.st.Subnets[id] == nil {
			return nil, subnetNotFound(id)
		}
	}
	var list []*Subnet
	for _, sub := range s.st.Subnets {
		if (!byID || want[sub.ID]) && matches(filters, sub.Tags, subnetFilter(s, sub)) {
			list = append(list, sub)
		}
	}
	page, next, err := paginate(list, req.Params, func(v *Subnet) string { return v.ID }, 5, 1000)
	if err != nil {
		return nil, err
	}
	out := struct {
		Subnets   []xmlSubnet `xml:"subnetSet>item"`
		NextToken string      `xml:"nextToken,omitempty"`
	}{NextToken: next}
	for _, sub := range page {
		out.Subnets = append(out.Subnets, s.renderSubnet(sub))
	}
	return out, nil
}

func (s *Service) deleteSubnet(ctx context.Context, req *Request) (any, error) {
	id, err := req.Params.Required("SubnetId")
	if err != nil {
		return nil, err
	}
	if s.st.Subnets[id] == nil {
		return nil, subnetNotFound(id)
	}
	for _, e := range s.st.ENIs {
		if e.SubnetID == id {
			return nil, awserr.BadRequest("DependencyViolation", "The subnet '%s' has dependencies and cannot be deleted.", id)
		}
	}
	delete(s.st.Subnets, id)
	s.markDirty()
	return returnTrue(), nil
}

func (s *Service) createSecurityGroup(ctx context.Context, req *Request) (any, error) {
	name, err := req.Params.Required("GroupName")
	if err != nil {
		return nil, err
	}
	desc, err := req.Params.Required("GroupDescription")
	if err != nil {
		return nil, err
	}
	vpcID, err := req.Params.Required("VpcId")
	if err != nil {
		return nil, err
	}
	if s.st.VPCs[vpcID] == nil {
		return nil, vpcNotFound(vpcID)
	}
	for _, sg := range s.st.SecurityGroups {
		if sg.VPCID == vpcID && sg.Name == name {
			return nil, awserr.BadRequest("InvalidGroup.Duplicate", "The security group '%s' already exists for VPC '%s'", name, vpcID)
		}
	}
	tags, err := tagsFor(req.Params, "security-group")
	if err != nil {
		return nil, err
	}
	sg := &SecurityGroup{ID: newID("sg"), Name: name, Description: desc, VPCID: vpcID, Tags: tags}
	s.st.SecurityGroups[sg.ID] = sg
	s.markDirty()
	return struct {
		Return  bool     `xml:"return"`
		GroupID string   `xml:"groupId"`
		Tags    []xmlTag `xml:"tagSet>item,omitempty"`
	}{true, sg.ID, renderTags(sg.Tags)}, nil
}

func sgFilter(sg *SecurityGroup) getter {
	return func(name string) ([]string, bool) {
		switch name {
		case "group-id":
			return one(sg.ID), true
		case "group-name":
			return one(sg.Name), true
		case "vpc-id":
			return one(sg.VPCID), true
		case "description":
			return one(sg.Description), true
		}
		return nil, false
	}
}

func (s *Service) describeSecurityGroups(ctx context.Context, req *Request) (any, error) {
	filters, err := req.Params.Filters()
	if err != nil {
		return nil, err
	}
	if err := validateFilters(filters, sgFilter(&SecurityGroup{})); err != nil {
		return nil, err
	}
	want, byID := ids(req.Params, "GroupId")
	for id := range want {
		if s.st.SecurityGroups[id] == nil {
			return nil, groupNotFound(id)
		}
	}
	names, byName := ids(req.Params, "GroupName")
	var list []*SecurityGroup
	for _, sg := range s.st.SecurityGroups {
		if (!byID || want[sg.ID]) && (!byName || names[sg.Name]) && matches(filters, sg.Tags, sgFilter(sg)) {
			list = append(list, sg)
		}
	}
	page, next, err := paginate(list, req.Params, func(v *SecurityGroup) string { return v.ID }, 5, 1000)
	if err != nil {
		return nil, err
	}
	out := struct {
		Groups    []xmlSecurityGroup `xml:"securityGroupInfo>item"`
		NextToken string             `xml:"nextToken,omitempty"`
	}{NextToken: next}
	for _, sg := range page {
		out.Groups = append(out.Groups, xmlSecurityGroup{s.cfg.Account, sg.ID, sg.Name, sg.Description, sg.VPCID, renderTags(sg.Tags)})
	}
	return out, nil
}

func (s *Service) deleteSecurityGroup(ctx context.Context, req *Request) (any, error) {
	id, err := req.Params.Required("GroupId")
	if err != nil {
		return nil, err
	}
	sg := s.st.SecurityGroups[id]
	if sg == nil {
		return nil, groupNotFound(id)
	}
	if sg.Name == "default" {
		return nil, awserr.BadRequest("CannotDelete", "the specified group: \"%s\" name: \"default\" cannot be deleted by a user", id)
	}
	for _, e := range s.st.ENIs {
		if slices.Contains(e.Groups, id) {
			return nil, awserr.BadRequest("DependencyViolation", "resource %s has a dependent object", id)
		}
	}
	delete(s.st.SecurityGroups, id)
	s.markDirty()
	return returnTrue(), nil
}

func (s *Service) describeAZs(ctx context.Context, req *Request) (any, error) {
	filters, err := req.Params.Filters()
	if err != nil {
		return nil, err
	}
	type xmlAZ struct {
		ZoneName   string `xml:"zoneName"`
		ZoneID     string `xml:"zoneId"`
		State      string `xml:"zoneState"`
		RegionName string `xml:"regionName"`
		ZoneType   string `xml:"zoneType"`
		GroupName  string `xml:"groupName"`
		OptIn      string `xml:"optInStatus"`
	}
	out := struct {
		AZs []xmlAZ `xml:"availabilityZoneInfo>item"`
	}{}
	names, byName := ids(req.Params, "ZoneName")
	for _, z := range s.cfg.AZs {
		z := z
		get := func(name string) ([]string, bool) {
			switch name {
			case "zone-name":
				return one(z), true
			case "zone-id":
				return one(s.azID(z)), true
			case "region-name":
				return one(s.cfg.Region), true
			case "state":
				return one("available"), true
			case "zone-type":
				return one("availability-zone"), true
			}
			return nil, false
		}
		if err := validateFilters(filters, get); err != nil {
			return nil, err
		}
		if (!byName || names[z]) && matches(filters, nil, get) {
			out.AZs = append(out.AZs, xmlAZ{z, s.azID(z), "available", s.cfg.Region, "availability-zone", s.cfg.Region, "opt-in-not-required"})
		}
	}
	return out, nil
}
