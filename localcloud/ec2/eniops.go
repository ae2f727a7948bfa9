package ec2

import (
	"context"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/berth-io/berth/internal/instancetypes"
	"github.com/berth-io/berth/localcloud/awserr"
)

func (s *Service) eniHandlers() map[string]handler {
	return map[string]handler{
		"CreateNetworkInterface":            s.createENI,
		"DescribeNetworkInterfaces":         s.describeENIs,
		"DeleteNetworkInterface":            s.deleteENI,
		"AttachNetworkInterface":            s.attachENI,
		"DetachNetworkInterface":            s.detachENI,
		"ModifyNetworkInterfaceAttribute":   s.modifyENI,
		"DescribeNetworkInterfaceAttribute": s.describeENIAttribute,
		"AssignPrivateIpAddresses":          s.assignPrivateIPs,
		"UnassignPrivateIpAddresses":        s.unassignPrivateIPs,
		"AssignIpv6Addresses":               s.assignIPv6,
		"UnassignIpv6Addresses":             s.unassignIPv6,
	}
}

// lookupENI validates the ID form and finds the ENI.
func (s *Service) lookupENI(id string) (*ENI, error) {
	if !strings.HasPrefix(id, "eni-") || len(id) < 5 {
		return nil, awserr.BadRequest("InvalidNetworkInterfaceID.Malformed", "Invalid id: \"%s\" (expecting \"eni-...\")", id)
	}
	e := s.st.ENIs[id]
	if e == nil {
		return nil, eniNotFound(id)
	}
	return e, nil
}

// instanceOf returns the instance an ENI is attached to, or nil.
func (s *Service) instanceOf(e *ENI) *Instance {
	if e.Attachment == nil {
		return nil
	}
	return s.st.Instances[e.Attachment.InstanceID]
}

// ipv4Slots counts what the per-interface IPv4 limit counts: every address
// and every /28 prefix.
func ipv4Slots(e *ENI) int { return len(e.PrivateIPs) + len(e.IPv4Prefixes) }

func (s *Service) deleteENI(ctx context.Context, req *Request) (any, error) {
	id, err := req.Params.Required("NetworkInterfaceId")
	if err != nil {
		return nil, err
	}
	e, err := s.lookupENI(id)
	if err != nil {
		return nil, err
	}
	if e.Attachment != nil {
		return nil, awserr.BadRequest("InvalidNetworkInterface.InUse", "Network interface '%s' is currently in use.", id)
	}
	s.releaseENI(e)
	s.markDirty()
	return returnTrue(), nil
}

func (s *Service) attachENI(ctx context.Context, req *Request) (any, error) {
	p := req.Params
	id, err := p.Required("NetworkInterfaceId")
	if err != nil {
		return nil, err
	}
	instID, err := p.Required("InstanceId")
	if err != nil {
		return nil, err
	}
	if !p.Has("DeviceIndex") {
		return nil, awserr.MissingParameter("DeviceIndex")
	}
	dev, err := p.Int("DeviceIndex", 0)
	if err != nil {
		return nil, err
	}
	card, err := p.Int("NetworkCardIndex", 0)
	if err != nil {
		return nil, err
	}
	e, err := s.lookupENI(id)
	if err != nil {
		return nil, err
	}
	inst := s.st.Instances[instID]
	if inst == nil {
		return nil, instanceNotFound(instID)
	}
	if !inst.live() {
		return nil, awserr.BadRequest("IncorrectInstanceState", "The instance '%s' is not in a valid state for this operation.", instID)
	}
	if e.Attachment != nil {
		return nil, awserr.BadRequest("InvalidNetworkInterface.InUse", "Interface: [%s] in use.", id)
	}
	if e.AZ != inst.AZ {
		return nil, awserr.InvalidParameterCombination("You may not attach a network interface to an instance if they are not in the same availability zone")
	}
	if e.VPCID != inst.VPCID {
		return nil, awserr.InvalidParameterCombination("The network interface and the instance must be in the same VPC")
	}
	info, _ := instancetypes.Lookup(inst.Type)
	if dev < 0 || dev > 31 {
		return nil, awserr.InvalidParameterValue("Invalid value '%d' for deviceIndex", dev)
	}
	if card < 0 || card >= max(info.NetworkCards, 1) {
		return nil, awserr.InvalidParameterValue("Invalid value '%d' for networkCardIndex: %s has %d network card(s)", card, inst.Type, max(info.NetworkCards, 1))
	}
	attached := 0
	for _, other := range s.st.ENIs {
		if a := other.Attachment; a != nil && a.InstanceID == instID {
			attached++
			if a.DeviceIndex == dev && a.NetworkCardIndex == card {
				return nil, awserr.InvalidParameterValue("Instance '%s' already has an interface attached at device index '%d'.", instID, dev)
			}
		}
	}
	if attached >= info.MaxENIs {
		return nil, awserr.BadRequest("AttachmentLimitExceeded", "Interface count %d exceeds the limit for %s", attached+1, inst.Type)
	}
	if ipv4Slots(e) > info.IPv4PerENI {
		return nil, awserr.BadRequest("PrivateIpAddressLimitExceeded", "Number of private addresses %d exceeds the limit of %d for %s", ipv4Slots(e), info.IPv4PerENI, inst.Type)
	}
	if len(e.IPv6Addresses) > info.IPv6PerENI {
		return nil, awserr.BadRequest("Ipv6AddressLimitExceeded", "Number of IPv6 addresses exceeds the limit for %s", inst.Type)
	}
	e.Attachment = &ENIAttachment{ID: newID("eni-attach"), InstanceID: instID, DeviceIndex: dev, NetworkCardIndex: card,
		Status: "attaching", AttachTime: req.now, ReadyAt: req.now.Add(s.attachDelay())}
	s.markDirty()
	return struct {
		AttachmentID     string `xml:"attachmentId"`
		NetworkCardIndex int    `xml:"networkCardIndex"`
	}{e.Attachment.ID, card}, nil
}

func (s *Service) findAttachment(id string) (*ENI, error) {
	for _, e := range s.st.ENIs {
		if e.Attachment != nil && e.Attachment.ID == id {
			return e, nil
		}
	}
	if !strings.HasPrefix(id, "eni-attach-") {
		return nil, awserr.BadRequest("InvalidAttachmentID.Malformed", "Invalid id: \"%s\"", id)
	}
	return nil, awserr.BadRequest("InvalidAttachmentID.NotFound", "Interface attachment '%s' does not exist.", id)
}

func (s *Service) detachENI(ctx context.Context, req *Request) (any, error) {
	id, err := req.Params.Required("AttachmentId")
	if err != nil {
		return nil, err
	}
	e, err := s.findAttachment(id)
	if err != nil {
		return nil, err
	}
	if e.Attachment.DeviceIndex == 0 && e.Attachment.NetworkCardIndex == 0 {
		return nil, awserr.BadRequest("OperationNotPermitted", "The network interface at device index 0 and networkCard index 0 cannot be detached.")
	}
	if e.Attachment.Status != "detaching" {
		e.Attachment.Status = "detaching"
		e.Attachment.ReadyAt = req.now.Add(s.attachDelay())
		s.markDirty()
	}
	return returnTrue(), nil
}

func (s *Service) modifyENI(ctx context.Context, req *Request) (any, error) {
	p := req.Params
	id, err := p.Required("NetworkInterfaceId")
	if err != nil {
		return nil, err
	}
	e, err := s.lookupENI(id)
	if err != nil {
		return nil, err
	}
	// Validate everything, then apply.
	var apply []func()
	if attID := p.Get("Attachment.AttachmentId"); attID != "" || p.Has("Attachment.DeleteOnTermination") {
		if e.Attachment == nil || e.Attachment.ID != attID {
			return nil, awserr.BadRequest("InvalidAttachmentID.NotFound", "Interface attachment '%s' does not exist.", attID)
		}
		dot, err := p.Bool("Attachment.DeleteOnTermination", e.Attachment.DeleteOnTermination)
		if err != nil {
			return nil, err
		}
		apply = append(apply, func() { e.Attachment.DeleteOnTermination = dot })
	}
	if p.Has("SourceDestCheck.Value") {
		v, err := p.Bool("SourceDestCheck.Value", true)
		if err != nil {
			return nil, err
		}
		apply = append(apply, func() { e.SourceDestCheck = v })
	}
	if p.Has("Description.Value") {
		d := p.Get("Description.Value")
		apply = append(apply, func() { e.Description = d })
	}
	if groups := p.List("SecurityGroupId"); len(groups) > 0 {
		g, err := s.groupsFor(groups, e.VPCID)
		if err != nil {
			return nil, err
		}
		apply = append(apply, func() { e.Groups = g })
	}
	if len(apply) == 0 {
		return nil, awserr.MissingParameter("an attribute to modify")
	}
	for _, f := range apply {
		f()
	}
	s.markDirty()
	return returnTrue(), nil
}

func (s *Service) describeENIAttribute(ctx context.Context, req *Request) (any, error) {
	id, err := req.Params.Required("NetworkInterfaceId")
	if err != nil {
		return nil, err
	}
	attr, err := req.Params.Required("Attribute")
	if err != nil {
		return nil, err
	}
	e, err := s.lookupENI(id)
	if err != nil {
		return nil, err
	}
	x := s.renderENI(e)
	type value struct {
		Value string `xml:"value"`
	}
	switch attr {
	case "description":
		return struct {
			ID          string `xml:"networkInterfaceId"`
			Description value  `xml:"description"`
		}{id, value{e.Description}}, nil
	case "sourceDestCheck":
		return struct {
			ID  string `xml:"networkInterfaceId"`
			SDC value  `xml:"sourceDestCheck"`
		}{id, value{strconv.FormatBool(e.SourceDestCheck)}}, nil
	case "groupSet":
		return struct {
			ID     string     `xml:"networkInterfaceId"`
			Groups []xmlGroup `xml:"groupSet>item"`
		}{id, x.Groups}, nil
	case "attachment":
		return struct {
			ID         string            `xml:"networkInterfaceId"`
			Attachment *xmlENIAttachment `xml:"attachment,omitempty"`
		}{id, x.Attachment}, nil
	}
	return nil, awserr.InvalidParameterValue("Value (%s) for parameter attribute is invalid. Unknown attribute.", attr)
}

// limitFor returns the instance type facts when the ENI is attached.
func (s *Service) limitFor(e *ENI) (instancetypes.Info, bool) {
	inst := s.instanceOf(e)
	if inst == nil {
		return instancetypes.Info{}, false
	}
	return instancetypes.Lookup(inst.Type)
}

// unattachedIPv4Limit bounds addresses on an ENI that is not attached; AWS
// checks the instance type's limit again at attach time.
const unattachedIPv4Limit = 50

func (s *Service) assignPrivateIPs(ctx context.Context, req *Request) (any, error) {
	p := req.Params
	id, err := p.Required("NetworkInterfaceId")
	if err != nil {
		return nil, err
	}
	e, err := s.lookupENI(id)
	if err != nil {
		return nil, err
	}
	count, err := p.Int("SecondaryPrivateIpAddressCount", 0)
	if err != nil {
		return nil, err
	}
	prefixCount, err := p.Int("Ipv4PrefixCount", 0)
	if err != nil {
		return nil, err
	}
	addrs := p.List("PrivateIpAddress")
	var prefixes []string
	prefixes = append(prefixes, p.List("Ipv4Prefix")...)
	if count < 0 || prefixCount < 0 {
		return nil, awserr.InvalidParameterValue("Address and prefix counts must be positive")
	}
	if (count > 0 && len(addrs) > 0) || (prefixCount > 0 && len(prefixes) > 0) {
		return nil, awserr.InvalidParameterCombination("Specify either a count or a list, not both")
	}
	wantIPs, wantPrefixes := count+len(addrs), prefixCount+len(prefixes)
	if wantIPs > 0 && wantPrefixes > 0 {
		return nil, awserr.InvalidParameterCombination("You cannot assign IPv4 addresses and IPv4 prefixes in the same request")
	}
	if wantIPs == 0 && wantPrefixes == 0 {
		return nil, awserr.MissingParameter("SecondaryPrivateIpAddressCount, PrivateIpAddress, Ipv4PrefixCount or Ipv4Prefix")
	}
	limit := unattachedIPv4Limit
	if info, ok := s.limitFor(e); ok {
		limit = info.IPv4PerENI
		if wantPrefixes > 0 && !info.PrefixDelegation {
			return nil, awserr.InvalidParameterValue("Prefix delegation is not supported for the instance type %s", info.Name)
		}
	}
	if ipv4Slots(e)+wantIPs+wantPrefixes > limit {
		return nil, awserr.BadRequest("PrivateIpAddressLimitExceeded", "Number of private addresses will exceed limit.")
	}
	allowReassign, err := p.Bool("AllowReassignment", false)
	if err != nil {
		return nil, err
	}
	sub := s.st.Subnets[e.SubnetID]
	if sub == nil {
		return nil, subnetNotFound(e.SubnetID)
	}
	// Allocate all or nothing.
	var gotIPs, gotPrefixes []string
	var moved []struct {
		from *ENI
		addr string
	}
	rollback := func() {
		for _, a := range gotIPs {
			releaseIP(sub, a)
		}
		for _, pr := range gotPrefixes {
			releasePrefix(sub, pr)
		}
		for _, m := range moved {
			sub.Used[m.addr] = m.from.ID
		}
	}
	for _, a := range addrs {
		if owner, used := sub.Used[a]; used && allowReassign && owner != e.ID {
			from := s.st.ENIs[owner]
			if from == nil || isPrimary(from, a) {
				rollback()
				return nil, awserr.BadRequest("InvalidIPAddress.InUse", "Address %s is in use as a primary address.", a)
			}
			delete(sub.Used, a)
			moved = append(moved, struct {
				from *ENI
				addr string
			}{from, a})
		}
		if err := reserveIP(sub, e.ID, a); err != nil {
			rollback()
			return nil, err
		}
		gotIPs = append(gotIPs, a)
	}
	if count > 0 {
		more, err := allocIPs(sub, e.ID, count)
		if err != nil {
			rollback()
			return nil, err
		}
		gotIPs = append(gotIPs, more...)
	}
	for _, pr := range prefixes {
		if err := reservePrefix(sub, e.ID, pr); err != nil {
			rollback()
			return nil, err
		}
		gotPrefixes = append(gotPrefixes, pr)
	}
	if prefixCount > 0 {
		more, err := allocPrefixes(sub, e.ID, prefixCount)
		if err != nil {
			rollback()
			return nil, err
		}
		gotPrefixes = append(gotPrefixes, more...)
	}
	if err := s.hooksAddressesChanged(ctx, e, func() {
		for _, m := range moved {
			m.from.PrivateIPs = slices.DeleteFunc(m.from.PrivateIPs, func(ip PrivateIP) bool { return ip.Address == m.addr })
		}
		for _, a := range gotIPs {
			e.PrivateIPs = append(e.PrivateIPs, PrivateIP{Address: a})
		}
		e.IPv4Prefixes = append(e.IPv4Prefixes, gotPrefixes...)
	}); err != nil {
		return nil, err
	}
	for _, m := range moved {
		_ = s.hooks.AddressesChanged(ctx, m.from)
	}
	s.markDirty()
	type ipItem struct {
		Address string `xml:"privateIpAddress"`
	}
	type prefixItem struct {
		Prefix string `xml:"ipv4Prefix"`
	}
	out := struct {
		ID       string       `xml:"networkInterfaceId"`
		IPs      []ipItem     `xml:"assignedPrivateIpAddressesSet>item,omitempty"`
		Prefixes []prefixItem `xml:"assignedIpv4PrefixSet>item,omitempty"`
		Return   bool         `xml:"return"`
	}{ID: e.ID, Return: true}
	for _, a := range gotIPs {
		out.IPs = append(out.IPs, ipItem{a})
	}
	for _, pr := range gotPrefixes {
		out.Prefixes = append(out.Prefixes, prefixItem{pr})
	}
	return out, nil
}

// hooksAddressesChanged applies change and tells the datapath.
func (s *Service) hooksAddressesChanged(ctx context.Context, e *ENI, change func()) error {
	change()
	if err := s.hooks.AddressesChanged(ctx, e); err != nil {
		s.log.Error("datapath: addresses changed", "eni", e.ID, "err", err)
	}
	return nil
}

func isPrimary(e *ENI, addr string) bool {
	for _, ip := range e.PrivateIPs {
		if ip.Address == addr {
			return ip.Primary
		}
	}
	return false
}

func (s *Service) unassignPrivateIPs(ctx context.Context, req *Request) (any, error) {
	p := req.Params
	id, err := p.Required("NetworkInterfaceId")
	if err != nil {
		return nil, err
	}
	e, err := s.lookupENI(id)
	if err != nil {
		return nil, err
	}
	addrs := p.List("PrivateIpAddress")
	prefixes := p.List("Ipv4Prefix")
	if len(addrs) == 0 && len(prefixes) == 0 {
		return nil, awserr.MissingParameter("PrivateIpAddress or Ipv4Prefix")
	}
	for _, a := range addrs {
		found := false
		for _, ip := range e.PrivateIPs {
			if ip.Address == a {
				if ip.Primary {
					return nil, awserr.InvalidParameterValue("The primary private IP address %s of interface %s cannot be unassigned.", a, id)
				}
				found = true
			}
		}
		if !found {
			return nil, awserr.InvalidParameterValue("Some of the specified addresses are not assigned to interface %s", id)
		}
	}
	for _, pr := range prefixes {
		if !slices.Contains(e.IPv4Prefixes, pr) {
			return nil, awserr.InvalidParameterValue("Some of the specified prefixes are not assigned to interface %s", id)
		}
	}
	sub := s.st.Subnets[e.SubnetID]
	_ = s.hooksAddressesChanged(ctx, e, func() {
		for _, a := range addrs {
			if sub != nil {
				releaseIP(sub, a)
			}
			e.PrivateIPs = slices.DeleteFunc(e.PrivateIPs, func(ip PrivateIP) bool { return ip.Address == a })
		}
		for _, pr := range prefixes {
			if sub != nil {
				releasePrefix(sub, pr)
			}
			e.IPv4Prefixes = slices.DeleteFunc(e.IPv4Prefixes, func(x string) bool { return x == pr })
		}
	})
	s.markDirty()
	return returnTrue(), nil
}

func (s *Service) assignIPv6(ctx context.Context, req *Request) (any, error) {
	p := req.Params
	id, err := p.Required("NetworkInterfaceId")
	if err != nil {
		return nil, err
	}
	e, err := s.lookupENI(id)
	if err != nil {
		return nil, err
	}
	count, err := p.Int("Ipv6AddressCount", 0)
	if err != nil {
		return nil, err
	}
	addrs := p.List("Ipv6Addresses")
	if count < 0 || (count == 0 && len(addrs) == 0) {
		return nil, awserr.MissingParameter("Ipv6AddressCount or Ipv6Addresses")
	}
	sub := s.st.Subnets[e.SubnetID]
	if sub == nil || sub.IPv6CIDR == "" {
		return nil, awserr.InvalidParameterValue("Subnet %s has no IPv6 CIDR block associated", e.SubnetID)
	}
	if info, ok := s.limitFor(e); ok && len(e.IPv6Addresses)+count+len(addrs) > info.IPv6PerENI {
		return nil, awserr.BadRequest("Ipv6AddressLimitExceeded", "Number of IPv6 addresses will exceed limit.")
	}
	cidr := netip.MustParsePrefix(sub.IPv6CIDR)
	for _, a := range addrs {
		ip, err := netip.ParseAddr(a)
		if err != nil || !ip.Is6() || !cidr.Contains(ip) {
			return nil, awserr.InvalidParameterValue("Invalid IPv6 address %s for subnet %s", a, sub.ID)
		}
		if _, used := sub.IPv6Used[ip.String()]; used {
			return nil, awserr.BadRequest("InvalidIPAddress.InUse", "Address %s is in use.", a)
		}
	}
	var got []string
	if sub.IPv6Used == nil {
		sub.IPv6Used = map[string]string{}
	}
	for _, a := range addrs {
		ip := netip.MustParseAddr(a).String()
		sub.IPv6Used[ip] = e.ID
		got = append(got, ip)
	}
	more, err := allocIPv6(sub, e.ID, count)
	if err != nil {
		for _, a := range got {
			delete(sub.IPv6Used, a)
		}
		return nil, err
	}
	got = append(got, more...)
	_ = s.hooksAddressesChanged(ctx, e, func() { e.IPv6Addresses = append(e.IPv6Addresses, got...) })
	s.markDirty()
	type item struct {
		Address string `xml:",chardata"`
	}
	return struct {
		ID    string `xml:"networkInterfaceId"`
		Addrs []item `xml:"assignedIpv6Addresses>item"`
	}{e.ID, func() []item {
		out := make([]item, len(got))
		for i, a := range got {
			out[i] = item{a}
		}
		return out
	}()}, nil
}

func (s *Service) unassignIPv6(ctx context.Context, req *Request) (any, error) {
	p := req.Params
	id, err := p.Required("NetworkInterfaceId")
	if err != nil {
		return nil, err
	}
	e, err := s.lookupENI(id)
	if err != nil {
		return nil, err
	}
	addrs := p.List("Ipv6Addresses")
	if len(addrs) == 0 {
		return nil, awserr.MissingParameter("Ipv6Addresses")
	}
	var norm []string
	for _, a := range addrs {
		ip, err := netip.ParseAddr(a)
		if err != nil || !slices.Contains(e.IPv6Addresses, ip.String()) {
			return nil, awserr.InvalidParameterValue("Some of the specified addresses are not assigned to interface %s", id)
		}
		norm = append(norm, ip.String())
	}
	sub := s.st.Subnets[e.SubnetID]
	_ = s.hooksAddressesChanged(ctx, e, func() {
		for _, a := range norm {
			if sub != nil {
				delete(sub.IPv6Used, a)
			}
			e.IPv6Addresses = slices.DeleteFunc(e.IPv6Addresses, func(x string) bool { return x == a })
		}
	})
	s.markDirty()
	type item struct {
		Address string `xml:",chardata"`
	}
	out := struct {
		ID    string `xml:"networkInterfaceId"`
		Addrs []item `xml:"unassignedIpv6Addresses>item"`
	}{ID: e.ID}
	for _, a := range norm {
		out.Addrs = append(out.Addrs, item{a})
	}
	return out, nil
}
