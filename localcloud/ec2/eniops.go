package ec2

// ENI operations beyond create/describe: attach, detach, delete, modify and
// describe attributes, and IPv4 address, /28 prefix and IPv6 address
// assignment.
//
// Limits come from the type of the instance an ENI is attached to: at most
// MaxENIs attachments, and IPv4PerENI slots per interface where the primary
// address, each secondary address and each /28 prefix take one slot each, as
// on AWS. An unattached ENI is bounded by the largest type's limits and
// checked again when it is attached.
//
// Address changes are all-or-nothing (addrTxn): a call that fails part-way,
// including because the datapath refused it, leaves every allocation and
// every ENI exactly as it found them.

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/berth-io/berth/internal/instancetypes"
	"github.com/berth-io/berth/localcloud/awserr"
	"github.com/berth-io/berth/localcloud/awsquery"
)

func (s *Service) eniHandlers() map[string]handler {
	return map[string]handler{
		"CreateNetworkInterface":            s.createENI,
		"DescribeNetworkInterfaces":         s.describeENIs,
		"DeleteNetworkInterface":            s.deleteENI,
		"AttachNetworkInterface":            s.attachENI,
		"DetachNetworkInterface":            s.detachENI,
		"ModifyNetworkInterfaceAttribute":   s.modifyENIAttribute,
		"DescribeNetworkInterfaceAttribute": s.describeENIAttribute,
		"AssignPrivateIpAddresses":          s.assignPrivateIPs,
		"UnassignPrivateIpAddresses":        s.unassignPrivateIPs,
		"AssignIpv6Addresses":               s.assignIPv6,
		"UnassignIpv6Addresses":             s.unassignIPv6,
	}
}

// Errors in EC2's wording.

func eniInUse(id string) error {
	return awserr.BadRequest("InvalidNetworkInterface.InUse", "Interface: [%s] in use.", id)
}

func attachmentNotFound(id string) error {
	return awserr.BadRequest("InvalidAttachmentID.NotFound", "Interface attachment '%s' does not exist.", id)
}

func ipv4LimitExceeded() error {
	return awserr.BadRequest("PrivateIpAddressLimitExceeded", "Number of private addresses will exceed limit.")
}

// ipv6LimitExceeded: EC2 documents no IPv6-specific code; its IPv4 limit
// code is used for the IPv6 limit too (the two limits are equal per type).
func ipv6LimitExceeded() error {
	return awserr.BadRequest("PrivateIpAddressLimitExceeded", "Number of IPv6 addresses will exceed limit.")
}

func notAssigned(id string) error {
	return awserr.InvalidParameterValue("Some of the specified addresses are not assigned to interface %s", id)
}

// lookupENI reads the NetworkInterfaceId parameter and finds the ENI.
func (s *Service) lookupENI(p awsquery.Params) (*ENI, error) {
	return s.lookupENIParam(p, "NetworkInterfaceId")
}

// lookupENIParam reads the ENI ID in parameter name and finds the ENI.
func (s *Service) lookupENIParam(p awsquery.Params, name string) (*ENI, error) {
	id, err := p.Required(name)
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(id, "eni-") || len(id) <= len("eni-") {
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

// eniLimits are the per-interface limits that apply to an ENI now.
type eniLimits struct {
	instanceType string // "" when the ENI is not attached
	ipv4, ipv6   int
	prefixes     bool // /28 prefix delegation (Nitro types)
	ipv6OK       bool
}

// unattachedLimits bounds an ENI that is not attached: the largest limits
// of any known type.
func unattachedLimits() eniLimits {
	l := eniLimits{prefixes: true, ipv6OK: true}
	for _, info := range instancetypes.All() {
		l.ipv4 = max(l.ipv4, info.IPv4PerENI)
		l.ipv6 = max(l.ipv6, info.IPv6PerENI)
	}
	return l
}

func (s *Service) limitsOf(e *ENI) eniLimits {
	if inst := s.instanceOf(e); inst != nil {
		if info, ok := instancetypes.Lookup(inst.Type); ok {
			return eniLimits{instanceType: info.Name, ipv4: info.IPv4PerENI, ipv6: info.IPv6PerENI,
				prefixes: info.PrefixDelegation, ipv6OK: info.IPv6Supported}
		}
	}
	return unattachedLimits()
}

func (s *Service) deleteENI(ctx context.Context, req *Request) (any, error) {
	e, err := s.lookupENI(req.Params)
	if err != nil {
		return nil, err
	}
	if e.Attachment != nil {
		return nil, awserr.BadRequest("InvalidNetworkInterface.InUse", "The network interface '%s' is currently in use.", e.ID)
	}
	// A branch goes off its trunk's VLAN with it.
	trunks := s.dropTrunkAssociations(e.ID)
	s.releaseENI(e)
	s.markDirty()
	for _, t := range trunks {
		if err := s.hooks.TrunkChanged(ctx, t); err != nil {
			s.log.Error("datapath: branch deleted", "eni", e.ID, "trunk", t.ID, "err", err)
		}
	}
	return returnTrue(), nil
}

func (s *Service) attachENI(ctx context.Context, req *Request) (any, error) {
	p := req.Params
	e, err := s.lookupENI(p)
	if err != nil {
		return nil, err
	}
	if e.InterfaceType == "branch" {
		return nil, awserr.InvalidParameterValue("Branch interface %s cannot be attached to an instance; associate it with a trunk interface", e.ID)
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
	inst := s.st.Instances[instID]
	if inst == nil {
		return nil, instanceNotFound(instID)
	}
	if !inst.live() {
		return nil, awserr.BadRequest("IncorrectInstanceState", "The instance '%s' is not in a valid state for this operation.", instID)
	}
	if e.Attachment != nil {
		return nil, eniInUse(e.ID)
	}
	if e.AZ != inst.AZ {
		return nil, awserr.InvalidParameterCombination("You may not attach a network interface to an instance if they are not in the same availability zone")
	}
	if e.VPCID != inst.VPCID {
		return nil, awserr.InvalidParameterCombination("The network interface %s and the instance %s belong to different VPCs.", e.ID, instID)
	}
	info, ok := instancetypes.Lookup(inst.Type)
	if !ok {
		return nil, awserr.As(fmt.Errorf("attach %s: instance %s has unknown type %q", e.ID, instID, inst.Type))
	}
	if dev < 0 {
		return nil, awserr.InvalidParameterValue("Invalid value '%d' for deviceIndex.", dev)
	}
	cards := max(info.NetworkCards, 1)
	if card < 0 || card >= cards {
		return nil, awserr.InvalidParameterValue("Invalid value '%d' for networkCardIndex: instance type %s has %d network card(s).", card, inst.Type, cards)
	}
	total, onCard := 0, 0
	for _, other := range s.st.ENIs {
		a := other.Attachment
		if a == nil || a.InstanceID != instID {
			continue
		}
		total++
		if a.NetworkCardIndex != card {
			continue
		}
		onCard++
		if a.DeviceIndex == dev {
			return nil, awserr.InvalidParameterValue("Instance '%s' already has an interface attached at device index '%d'.", instID, dev)
		}
	}
	if total >= info.MaxENIs || onCard >= max(info.MaxENIs/cards, 1) {
		return nil, awserr.BadRequest("AttachmentLimitExceeded", "Interface count %d exceeds the limit for %s", total+1, inst.Type)
	}
	if ipv4Slots(e) > info.IPv4PerENI {
		return nil, ipv4LimitExceeded()
	}
	if len(e.IPv4Prefixes) > 0 && !info.PrefixDelegation {
		return nil, awserr.InvalidParameterValue("Network interface %s has IPv4 prefixes; instance type %s does not support prefix delegation.", e.ID, inst.Type)
	}
	if len(e.IPv6Addresses) > 0 && !info.IPv6Supported {
		return nil, awserr.InvalidParameterValue("Network interface %s has IPv6 addresses; instance type %s does not support IPv6.", e.ID, inst.Type)
	}
	if len(e.IPv6Addresses) > info.IPv6PerENI {
		return nil, ipv6LimitExceeded()
	}
	e.Attachment = &ENIAttachment{ID: newID("eni-attach"), InstanceID: instID, DeviceIndex: dev, NetworkCardIndex: card,
		Status: "attaching", AttachTime: req.now, ReadyAt: req.now.Add(s.attachDelay())}
	s.markDirty()
	return struct {
		AttachmentID     string `xml:"attachmentId"`
		NetworkCardIndex int    `xml:"networkCardIndex"`
	}{e.Attachment.ID, card}, nil
}

func (s *Service) detachENI(ctx context.Context, req *Request) (any, error) {
	p := req.Params
	id, err := p.Required("AttachmentId")
	if err != nil {
		return nil, err
	}
	if _, err := p.Bool("Force", false); err != nil {
		return nil, err
	}
	var e *ENI
	for _, cand := range s.st.ENIs {
		if cand.Attachment != nil && cand.Attachment.ID == id {
			e = cand
			break
		}
	}
	if e == nil {
		if !strings.HasPrefix(id, "eni-attach-") {
			return nil, awserr.BadRequest("InvalidAttachmentID.Malformed", "Invalid id: \"%s\" (expecting \"eni-attach-...\")", id)
		}
		return nil, attachmentNotFound(id)
	}
	a := e.Attachment
	if a.DeviceIndex == 0 && a.NetworkCardIndex == 0 {
		return nil, awserr.BadRequest("OperationNotPermitted", "The network interface at device index 0 and networkCard index 0 cannot be detached.")
	}
	switch a.Status {
	case "detaching":
		return returnTrue(), nil
	case "attaching":
		// The attachment completes before it can be undone, so the
		// datapath always sees attach before detach.
		a.Status = "attached"
		if inst := s.st.Instances[a.InstanceID]; inst != nil {
			if err := s.hooks.ENIAttached(ctx, inst, e); err != nil {
				s.log.Error("datapath: attach eni", "eni", e.ID, "err", err)
			}
		}
	}
	a.Status = "detaching"
	a.ReadyAt = req.now.Add(s.attachDelay())
	s.markDirty()
	return returnTrue(), nil
}

func (s *Service) modifyENIAttribute(ctx context.Context, req *Request) (any, error) {
	p := req.Params
	e, err := s.lookupENI(p)
	if err != nil {
		return nil, err
	}
	var named []string
	for _, attr := range []struct {
		name string
		set  bool
	}{
		{"attachment", p.Has("Attachment.AttachmentId") || p.Has("Attachment.DeleteOnTermination")},
		{"description", p.Has("Description.Value")},
		{"groupSet", len(p.List("SecurityGroupId")) > 0},
		{"sourceDestCheck", p.Has("SourceDestCheck.Value")},
		{"associatePublicIpAddress", p.Has("AssociatePublicIpAddress")},
		{"enablePrimaryIpv6", p.Has("EnablePrimaryIpv6")},
		{"associatedSubnetIds", len(p.List("AssociatedSubnetId")) > 0},
	} {
		if attr.set {
			named = append(named, attr.name)
		}
	}
	switch {
	case len(named) == 0:
		return nil, awserr.MissingParameter("Attachment, Description, SecurityGroupId or SourceDestCheck")
	case len(named) > 1:
		return nil, awserr.InvalidParameterCombination("Fields for multiple attribute types specified: %s", strings.Join(named, ", "))
	}
	switch named[0] {
	case "attachment":
		attID, err := p.Required("Attachment.AttachmentId")
		if err != nil {
			return nil, err
		}
		if e.Attachment == nil || e.Attachment.ID != attID {
			return nil, attachmentNotFound(attID)
		}
		if !p.Has("Attachment.DeleteOnTermination") {
			return nil, awserr.MissingParameter("Attachment.DeleteOnTermination")
		}
		dot, err := p.Bool("Attachment.DeleteOnTermination", false)
		if err != nil {
			return nil, err
		}
		e.Attachment.DeleteOnTermination = dot
	case "description":
		d := p.Get("Description.Value")
		if len(d) > 255 {
			return nil, awserr.InvalidParameterValue("Value for parameter description is invalid: at most 255 characters.")
		}
		e.Description = d
	case "groupSet":
		var list []string
		for _, g := range p.List("SecurityGroupId") {
			if !slices.Contains(list, g) {
				list = append(list, g)
			}
		}
		groups, err := s.groupsFor(list, e.VPCID)
		if err != nil {
			return nil, err
		}
		e.Groups = groups
	case "sourceDestCheck":
		v, err := p.Bool("SourceDestCheck.Value", true)
		if err != nil {
			return nil, err
		}
		e.SourceDestCheck = v
	default:
		return nil, awserr.InvalidParameterValue("Modifying the network interface attribute %s is not supported by localcloud.", named[0])
	}
	s.markDirty()
	return returnTrue(), nil
}

func (s *Service) describeENIAttribute(ctx context.Context, req *Request) (any, error) {
	e, err := s.lookupENI(req.Params)
	if err != nil {
		return nil, err
	}
	attr, err := req.Params.Required("Attribute")
	if err != nil {
		return nil, err
	}
	type value struct {
		Value string `xml:"value"`
	}
	switch attr {
	case "description":
		return struct {
			ID          string `xml:"networkInterfaceId"`
			Description value  `xml:"description"`
		}{e.ID, value{e.Description}}, nil
	case "sourceDestCheck":
		return struct {
			ID              string `xml:"networkInterfaceId"`
			SourceDestCheck value  `xml:"sourceDestCheck"`
		}{e.ID, value{strconv.FormatBool(e.SourceDestCheck)}}, nil
	case "groupSet":
		return struct {
			ID     string     `xml:"networkInterfaceId"`
			Groups []xmlGroup `xml:"groupSet>item"`
		}{e.ID, s.renderGroups(e.Groups)}, nil
	case "attachment":
		return struct {
			ID         string            `xml:"networkInterfaceId"`
			Attachment *xmlENIAttachment `xml:"attachment,omitempty"`
		}{e.ID, s.renderENI(e).Attachment}, nil
	case "associatePublicIpAddress":
		return struct {
			ID        string `xml:"networkInterfaceId"`
			Associate bool   `xml:"associatePublicIpAddress"`
		}{e.ID, false}, nil
	}
	return nil, awserr.InvalidParameterValue("Value (%s) for parameter attribute is invalid. Unknown network interface attribute.", attr)
}

// addrTxn makes an address change all-or-nothing. It remembers the
// subnet's allocations and the address lists of every ENI it touches;
// rollback puts them back and tells the datapath again about any ENI it had
// already been told about.
type addrTxn struct {
	s        *Service
	sub      *Subnet
	used     map[string]string
	ipv6Used map[string]string
	touched  []*ENI
	saved    []eniAddrs
	told     []*ENI
}

type eniAddrs struct {
	ips      []PrivateIP
	prefixes []string
	ipv6     []string
}

func (s *Service) beginAddrTxn(sub *Subnet) *addrTxn {
	return &addrTxn{s: s, sub: sub, used: maps.Clone(sub.Used), ipv6Used: maps.Clone(sub.IPv6Used)}
}

// touch records e's addresses before the first change to them.
func (t *addrTxn) touch(e *ENI) {
	if slices.Contains(t.touched, e) {
		return
	}
	t.touched = append(t.touched, e)
	t.saved = append(t.saved, eniAddrs{slices.Clone(e.PrivateIPs), slices.Clone(e.IPv4Prefixes), slices.Clone(e.IPv6Addresses)})
}

// commit tells the datapath about every touched ENI, in the order they were
// touched (an ENI losing an address before the one gaining it).
func (t *addrTxn) commit(ctx context.Context) error {
	for _, e := range t.touched {
		t.told = append(t.told, e)
		if err := t.s.hooks.AddressesChanged(ctx, e); err != nil {
			return fmt.Errorf("datapath: addresses of %s: %w", e.ID, err)
		}
	}
	t.s.markDirty()
	return nil
}

func (t *addrTxn) rollback(ctx context.Context) {
	t.sub.Used = t.used
	t.sub.IPv6Used = t.ipv6Used
	for i, e := range t.touched {
		e.PrivateIPs, e.IPv4Prefixes, e.IPv6Addresses = t.saved[i].ips, t.saved[i].prefixes, t.saved[i].ipv6
	}
	for _, e := range t.told {
		if err := t.s.hooks.AddressesChanged(ctx, e); err != nil {
			t.s.log.Error("datapath: restore addresses", "eni", e.ID, "err", err)
		}
	}
}

// takeOver moves addr to e for AllowReassignment when another ENI holds it
// as a secondary address. Anything else (a primary address, an address of
// a delegated prefix) stays put and reserveIP reports it in use.
func (t *addrTxn) takeOver(e *ENI, addr string) {
	owner, used := t.sub.Used[addr]
	if !used || owner == e.ID {
		return
	}
	from := t.s.st.ENIs[owner]
	if from == nil {
		return
	}
	i := slices.IndexFunc(from.PrivateIPs, func(ip PrivateIP) bool { return ip.Address == addr })
	if i < 0 || from.PrivateIPs[i].Primary {
		return
	}
	t.touch(from)
	from.PrivateIPs = slices.Delete(from.PrivateIPs, i, i+1)
	releaseIP(t.sub, addr)
}

func (s *Service) subnetOf(e *ENI) (*Subnet, error) {
	sub := s.st.Subnets[e.SubnetID]
	if sub == nil {
		return nil, awserr.As(fmt.Errorf("network interface %s: subnet %s is gone", e.ID, e.SubnetID))
	}
	return sub, nil
}

type xmlAssignedIP struct {
	Address string `xml:"privateIpAddress"`
}

type xmlAssignedPrefix struct {
	Prefix string `xml:"ipv4Prefix"`
}

func (s *Service) assignPrivateIPs(ctx context.Context, req *Request) (any, error) {
	p := req.Params
	e, err := s.lookupENI(p)
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
	reassign, err := p.Bool("AllowReassignment", false)
	if err != nil {
		return nil, err
	}
	addrs, prefixes := p.List("PrivateIpAddress"), p.List("Ipv4Prefix")
	switch {
	case count < 0:
		return nil, awserr.InvalidParameterValue("Value (%d) for parameter secondaryPrivateIpAddressCount is invalid. Expected a positive integer.", count)
	case prefixCount < 0:
		return nil, awserr.InvalidParameterValue("Value (%d) for parameter ipv4PrefixCount is invalid. Expected a positive integer.", prefixCount)
	case count > 0 && len(addrs) > 0:
		return nil, awserr.InvalidParameterCombination("You may specify secondaryPrivateIpAddressCount or specific secondary private IP addresses, but not both.")
	case prefixCount > 0 && len(prefixes) > 0:
		return nil, awserr.InvalidParameterCombination("You may specify ipv4PrefixCount or specific IPv4 prefixes, but not both.")
	}
	l := s.limitsOf(e)
	if count > l.ipv4 || prefixCount > l.ipv4 || len(addrs) > l.ipv4 || len(prefixes) > l.ipv4 {
		return nil, ipv4LimitExceeded()
	}
	nIPs, nPrefixes := count+len(addrs), prefixCount+len(prefixes)
	switch {
	case nIPs > 0 && nPrefixes > 0:
		return nil, awserr.InvalidParameterCombination("You cannot assign both IPv4 addresses and IPv4 prefixes in the same request.")
	case nIPs == 0 && nPrefixes == 0:
		return nil, awserr.MissingParameter("SecondaryPrivateIpAddressCount, PrivateIpAddress, Ipv4PrefixCount or Ipv4Prefix")
	case nPrefixes > 0 && !l.prefixes:
		return nil, awserr.InvalidParameterValue("Prefix delegation is not supported for instance type %s.", l.instanceType)
	case ipv4Slots(e)+nIPs+nPrefixes > l.ipv4:
		return nil, ipv4LimitExceeded()
	}
	sub, err := s.subnetOf(e)
	if err != nil {
		return nil, err
	}

	t := s.beginAddrTxn(sub)
	done := false
	defer func() {
		if !done {
			t.rollback(ctx)
		}
	}()
	var gotIPs, gotPrefixes []string
	for _, a := range addrs {
		if reassign {
			t.takeOver(e, a)
		}
		if err := reserveIP(sub, e.ID, a); err != nil {
			return nil, err
		}
		gotIPs = append(gotIPs, a)
	}
	more, err := allocIPs(sub, e.ID, count)
	if err != nil {
		return nil, err
	}
	gotIPs = append(gotIPs, more...)
	for _, pr := range prefixes {
		if err := reservePrefix(sub, e.ID, pr); err != nil {
			return nil, err
		}
		gotPrefixes = append(gotPrefixes, pr)
	}
	morePrefixes, err := allocPrefixes(sub, e.ID, prefixCount)
	if err != nil {
		return nil, err
	}
	gotPrefixes = append(gotPrefixes, morePrefixes...)

	t.touch(e)
	for _, a := range gotIPs {
		e.PrivateIPs = append(e.PrivateIPs, PrivateIP{Address: a})
	}
	e.IPv4Prefixes = append(e.IPv4Prefixes, gotPrefixes...)
	if err := t.commit(ctx); err != nil {
		return nil, err
	}
	done = true

	out := struct {
		ID       string              `xml:"networkInterfaceId"`
		IPs      []xmlAssignedIP     `xml:"assignedPrivateIpAddressesSet>item,omitempty"`
		Prefixes []xmlAssignedPrefix `xml:"assignedIpv4PrefixSet>item,omitempty"`
	}{ID: e.ID}
	for _, a := range gotIPs {
		out.IPs = append(out.IPs, xmlAssignedIP{a})
	}
	for _, pr := range gotPrefixes {
		out.Prefixes = append(out.Prefixes, xmlAssignedPrefix{pr})
	}
	return out, nil
}

func (s *Service) unassignPrivateIPs(ctx context.Context, req *Request) (any, error) {
	p := req.Params
	e, err := s.lookupENI(p)
	if err != nil {
		return nil, err
	}
	addrs, prefixes := p.List("PrivateIpAddress"), p.List("Ipv4Prefix")
	if len(addrs) == 0 && len(prefixes) == 0 {
		return nil, awserr.MissingParameter("PrivateIpAddress or Ipv4Prefix")
	}
	for _, a := range addrs {
		i := slices.IndexFunc(e.PrivateIPs, func(ip PrivateIP) bool { return ip.Address == a })
		if i < 0 {
			return nil, notAssigned(e.ID)
		}
		if e.PrivateIPs[i].Primary {
			return nil, awserr.InvalidParameterValue("Value (%s) for parameter privateIpAddress is invalid. The primary IP address of an interface cannot be unassigned.", a)
		}
	}
	for _, pr := range prefixes {
		if !slices.Contains(e.IPv4Prefixes, pr) {
			return nil, awserr.InvalidParameterValue("Some of the specified prefixes are not assigned to interface %s", e.ID)
		}
	}
	sub, err := s.subnetOf(e)
	if err != nil {
		return nil, err
	}
	t := s.beginAddrTxn(sub)
	t.touch(e)
	e.PrivateIPs = slices.DeleteFunc(e.PrivateIPs, func(ip PrivateIP) bool { return slices.Contains(addrs, ip.Address) })
	e.IPv4Prefixes = slices.DeleteFunc(e.IPv4Prefixes, func(pr string) bool { return slices.Contains(prefixes, pr) })
	for _, a := range addrs {
		releaseIP(sub, a)
	}
	for _, pr := range prefixes {
		releasePrefix(sub, pr)
	}
	if err := t.commit(ctx); err != nil {
		t.rollback(ctx)
		return nil, err
	}
	return returnTrue(), nil
}

// reserveIPv6 takes a specific address of the subnet's /64 for owner and
// returns it in canonical form.
func reserveIPv6(sub *Subnet, owner, addr string) (string, error) {
	a, err := netip.ParseAddr(addr)
	if err != nil || !a.Is6() || a.Is4In6() || a.Zone() != "" {
		return "", awserr.InvalidParameterValue("Invalid IPv6 address: %s", addr)
	}
	if !netip.MustParsePrefix(sub.IPv6CIDR).Contains(a) {
		return "", awserr.InvalidParameterValue("Address %s does not fall within the subnet's IPv6 address range %s", addr, sub.IPv6CIDR)
	}
	canon := a.String()
	if _, used := sub.IPv6Used[canon]; used {
		return "", awserr.BadRequest("InvalidIPAddress.InUse", "Address %s is in use.", canon)
	}
	if sub.IPv6Used == nil {
		sub.IPv6Used = map[string]string{}
	}
	sub.IPv6Used[canon] = owner
	return canon, nil
}

func (s *Service) assignIPv6(ctx context.Context, req *Request) (any, error) {
	p := req.Params
	e, err := s.lookupENI(p)
	if err != nil {
		return nil, err
	}
	count, err := p.Int("Ipv6AddressCount", 0)
	if err != nil {
		return nil, err
	}
	addrs := p.List("Ipv6Addresses")
	switch {
	case p.Has("Ipv6PrefixCount") || len(p.List("Ipv6Prefix")) > 0:
		return nil, awserr.InvalidParameterValue("IPv6 prefix delegation is not supported by localcloud.")
	case count < 0:
		return nil, awserr.InvalidParameterValue("Value (%d) for parameter ipv6AddressCount is invalid. Expected a positive integer.", count)
	case count > 0 && len(addrs) > 0:
		return nil, awserr.InvalidParameterCombination("You may specify ipv6AddressCount or specific IPv6 addresses, but not both.")
	case count == 0 && len(addrs) == 0:
		return nil, awserr.MissingParameter("Ipv6AddressCount or Ipv6Addresses")
	}
	sub, err := s.subnetOf(e)
	if err != nil {
		return nil, err
	}
	if sub.IPv6CIDR == "" {
		return nil, awserr.InvalidParameterValue("Subnet %s has no IPv6 CIDR block associated.", sub.ID)
	}
	l := s.limitsOf(e)
	if !l.ipv6OK {
		return nil, awserr.InvalidParameterValue("Instance type %s does not support IPv6.", l.instanceType)
	}
	if count > l.ipv6 || len(addrs) > l.ipv6 || len(e.IPv6Addresses)+count+len(addrs) > l.ipv6 {
		return nil, ipv6LimitExceeded()
	}

	t := s.beginAddrTxn(sub)
	done := false
	defer func() {
		if !done {
			t.rollback(ctx)
		}
	}()
	var got []string
	for _, a := range addrs {
		canon, err := reserveIPv6(sub, e.ID, a)
		if err != nil {
			return nil, err
		}
		got = append(got, canon)
	}
	more, err := allocIPv6(sub, e.ID, count)
	if err != nil {
		return nil, err
	}
	got = append(got, more...)
	t.touch(e)
	e.IPv6Addresses = append(e.IPv6Addresses, got...)
	if err := t.commit(ctx); err != nil {
		return nil, err
	}
	done = true
	return struct {
		ID    string   `xml:"networkInterfaceId"`
		Addrs []string `xml:"assignedIpv6Addresses>item"`
	}{e.ID, got}, nil
}

func (s *Service) unassignIPv6(ctx context.Context, req *Request) (any, error) {
	p := req.Params
	e, err := s.lookupENI(p)
	if err != nil {
		return nil, err
	}
	addrs := p.List("Ipv6Addresses")
	if len(p.List("Ipv6Prefix")) > 0 {
		return nil, awserr.InvalidParameterValue("Some of the specified prefixes are not assigned to interface %s", e.ID)
	}
	if len(addrs) == 0 {
		return nil, awserr.MissingParameter("Ipv6Addresses")
	}
	var canon []string
	for _, a := range addrs {
		ip, err := netip.ParseAddr(a)
		if err != nil || !slices.Contains(e.IPv6Addresses, ip.String()) {
			return nil, notAssigned(e.ID)
		}
		if !slices.Contains(canon, ip.String()) {
			canon = append(canon, ip.String())
		}
	}
	sub, err := s.subnetOf(e)
	if err != nil {
		return nil, err
	}
	t := s.beginAddrTxn(sub)
	t.touch(e)
	e.IPv6Addresses = slices.DeleteFunc(e.IPv6Addresses, func(a string) bool { return slices.Contains(canon, a) })
	for _, a := range canon {
		delete(sub.IPv6Used, a)
	}
	if err := t.commit(ctx); err != nil {
		t.rollback(ctx)
		return nil, err
	}
	return struct {
		ID    string   `xml:"networkInterfaceId"`
		Addrs []string `xml:"unassignedIpv6Addresses>item"`
	}{e.ID, canon}, nil
}
