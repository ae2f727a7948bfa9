package ec2

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2sdk "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
)

// recordingHooks records what the datapath is told and can refuse address
// changes.
type recordingHooks struct {
	nopHooks
	mu            sync.Mutex
	events        []string
	failAddresses bool
}

func (h *recordingHooks) add(ev string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, ev)
}

func (h *recordingHooks) TrunkChanged(_ context.Context, e *ENI) error {
	h.add("trunk " + e.ID)
	return nil
}

func (h *recordingHooks) ENIAttached(_ context.Context, _ *Instance, e *ENI) error {
	h.add("attached " + e.ID)
	return nil
}

func (h *recordingHooks) ENIDetached(_ context.Context, _ string, e *ENI) error {
	h.add("detached " + e.ID)
	return nil
}

func (h *recordingHooks) AddressesChanged(_ context.Context, e *ENI) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, fmt.Sprintf("addresses %s ipv4=%d prefixes=%d ipv6=%d", e.ID, len(e.PrivateIPs), len(e.IPv4Prefixes), len(e.IPv6Addresses)))
	if h.failAddresses {
		return errors.New("datapath refused")
	}
	return nil
}

func (h *recordingHooks) setFail(v bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.failAddresses = v
}

// seen returns the recorded events that start with prefix.
func (h *recordingHooks) seen(prefix string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, ev := range h.events {
		if strings.HasPrefix(ev, prefix) {
			out = append(out, ev)
		}
	}
	return out
}

// wantErr fails unless err is the AWS error code whose message contains msg.
func wantErr(t *testing.T, what string, err error, code, msg string) {
	t.Helper()
	if errCode(err) != code {
		t.Errorf("%s: got %v, want %s", what, err, code)
		return
	}
	var ae smithy.APIError
	if errors.As(err, &ae) && !strings.Contains(ae.ErrorMessage(), msg) {
		t.Errorf("%s: message %q does not contain %q", what, ae.ErrorMessage(), msg)
	}
}

func runOne(t *testing.T, c *ec2sdk.Client, subID string, typ types.InstanceType) string {
	t.Helper()
	out, err := c.RunInstances(context.Background(), &ec2sdk.RunInstancesInput{ImageId: aws.String("ami-1"), InstanceType: typ,
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1), SubnetId: &subID})
	if err != nil {
		t.Fatal(err)
	}
	id := *out.Instances[0].InstanceId
	if err := ec2sdk.NewInstanceRunningWaiter(c).Wait(context.Background(), &ec2sdk.DescribeInstancesInput{InstanceIds: []string{id}}, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	return id
}

func createENI(t *testing.T, c *ec2sdk.Client, in *ec2sdk.CreateNetworkInterfaceInput) string {
	t.Helper()
	out, err := c.CreateNetworkInterface(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	return *out.NetworkInterface.NetworkInterfaceId
}

func plainENI(t *testing.T, c *ec2sdk.Client, subID string) string {
	t.Helper()
	return createENI(t, c, &ec2sdk.CreateNetworkInterfaceInput{SubnetId: &subID})
}

func describeENI(t *testing.T, c *ec2sdk.Client, id string) types.NetworkInterface {
	t.Helper()
	out, err := c.DescribeNetworkInterfaces(context.Background(), &ec2sdk.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{id}})
	if err != nil {
		t.Fatal(err)
	}
	return out.NetworkInterfaces[0]
}

func eniStatusOf(t *testing.T, c *ec2sdk.Client, id string) types.NetworkInterfaceStatus {
	t.Helper()
	return describeENI(t, c, id).Status
}

// addressesOf returns the IPv4 addresses of an ENI, primary first.
func addressesOf(t *testing.T, c *ec2sdk.Client, id string) []string {
	t.Helper()
	var out []string
	for _, a := range describeENI(t, c, id).PrivateIpAddresses {
		if *a.Primary {
			out = append([]string{*a.PrivateIpAddress}, out...)
		} else {
			out = append(out, *a.PrivateIpAddress)
		}
	}
	return out
}

func available(t *testing.T, c *ec2sdk.Client, subID string) int32 {
	t.Helper()
	out, err := c.DescribeSubnets(context.Background(), &ec2sdk.DescribeSubnetsInput{SubnetIds: []string{subID}})
	if err != nil {
		t.Fatal(err)
	}
	return *out.Subnets[0].AvailableIpAddressCount
}

func createSubnet(t *testing.T, c *ec2sdk.Client, vpcID, cidr, az string) string {
	t.Helper()
	s, err := c.CreateSubnet(context.Background(), &ec2sdk.CreateSubnetInput{VpcId: &vpcID, CidrBlock: &cidr, AvailabilityZone: &az})
	if err != nil {
		t.Fatal(err)
	}
	return *s.Subnet.SubnetId
}

// attach attaches eni at index and waits until it is attached.
func attach(t *testing.T, c *ec2sdk.Client, eni, inst string, index int32) string {
	t.Helper()
	out, err := c.AttachNetworkInterface(context.Background(), &ec2sdk.AttachNetworkInterfaceInput{NetworkInterfaceId: &eni, InstanceId: &inst, DeviceIndex: &index})
	if err != nil {
		t.Fatalf("attach %s to %s at %d: %v", eni, inst, index, err)
	}
	waitFor(t, eni+" attached", func() bool { return eniStatusOf(t, c, eni) == types.NetworkInterfaceStatusInUse })
	return *out.AttachmentId
}

// freeAddresses returns n unallocated, unreserved addresses of a subnet,
// read from the service state.
func freeAddresses(t *testing.T, svc *Service, subID string, n int) []string {
	t.Helper()
	var out []string
	svc.View(context.Background(), func(st *State) {
		sub := st.Subnets[subID]
		p := subnetPrefix(sub)
		for off := 4; off < subnetSize(sub)-1 && len(out) < n; off++ {
			if a := addrAt(p, off).String(); sub.Used[a] == "" {
				out = append(out, a)
			}
		}
	})
	if len(out) < n {
		t.Fatalf("subnet %s has fewer than %d free addresses", subID, n)
	}
	return out
}

// checkAccounting verifies that the subnet's allocations are exactly the
// addresses and prefixes its ENIs hold.
func checkAccounting(t *testing.T, svc *Service, subID string) {
	t.Helper()
	svc.View(context.Background(), func(st *State) {
		sub := st.Subnets[subID]
		want := map[string]string{}
		for _, e := range st.ENIs {
			if e.SubnetID != subID {
				continue
			}
			for _, ip := range e.PrivateIPs {
				want[ip.Address] = e.ID
			}
			for _, pr := range e.IPv4Prefixes {
				pp := netip.MustParsePrefix(pr)
				for a, i := pp.Addr(), 0; i < 16; a, i = a.Next(), i+1 {
					want[a.String()] = e.ID
				}
			}
		}
		if len(want) != len(sub.Used) {
			t.Errorf("subnet %s: %d addresses allocated, ENIs hold %d", subID, len(sub.Used), len(want))
		}
		for a, owner := range want {
			if sub.Used[a] != owner {
				t.Errorf("subnet %s: %s allocated to %q, held by %s", subID, a, sub.Used[a], owner)
			}
		}
	})
}

func TestAttachNetworkInterfaceLimitsAndErrors(t *testing.T) {
	c, _ := newTestClient(t)
	ctx := context.Background()
	vpcID, subID := testVPC(t, c)
	subB := createSubnet(t, c, vpcID, "10.0.2.0/24", "us-west-2b")
	otherVPC, err := c.CreateVpc(ctx, &ec2sdk.CreateVpcInput{CidrBlock: aws.String("10.9.0.0/16")})
	if err != nil {
		t.Fatal(err)
	}
	subOther := createSubnet(t, c, *otherVPC.Vpc.VpcId, "10.9.1.0/24", "us-west-2a")

	inst := runOne(t, c, subID, types.InstanceTypeM5Large) // 3 ENIs x 10 IPv4
	nano := runOne(t, c, subID, types.InstanceTypeT3Nano)  // 2 ENIs x 2 IPv4
	xen := runOne(t, c, subID, types.InstanceTypeT2Micro)  // no prefix delegation
	gone := runOne(t, c, subID, types.InstanceTypeM5Large)
	if _, err := c.TerminateInstances(ctx, &ec2sdk.TerminateInstancesInput{InstanceIds: []string{gone}}); err != nil {
		t.Fatal(err)
	}

	e1, e2, e3 := plainENI(t, c, subID), plainENI(t, c, subID), plainENI(t, c, subID)
	out, err := c.AttachNetworkInterface(ctx, &ec2sdk.AttachNetworkInterfaceInput{NetworkInterfaceId: &e1, InstanceId: &inst, DeviceIndex: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(*out.AttachmentId, "eni-attach-") || out.NetworkCardIndex == nil || *out.NetworkCardIndex != 0 {
		t.Fatalf("attach response: %s card %v", *out.AttachmentId, out.NetworkCardIndex)
	}
	attach(t, c, e2, inst, 2)
	waitFor(t, "e1 attached", func() bool { return eniStatusOf(t, c, e1) == types.NetworkInterfaceStatusInUse })

	big := createENI(t, c, &ec2sdk.CreateNetworkInterfaceInput{SubnetId: &subID, SecondaryPrivateIpAddressCount: aws.Int32(2)})
	withPrefix := createENI(t, c, &ec2sdk.CreateNetworkInterfaceInput{SubnetId: &subID, Ipv4PrefixCount: aws.Int32(1)})
	inB, inOther := plainENI(t, c, subB), plainENI(t, c, subOther)

	for _, tc := range []struct {
		name     string
		eni      string
		inst     string
		index    *int32
		card     *int32
		code     string
		contains string
	}{
		{"device index taken", e3, inst, aws.Int32(1), nil, "InvalidParameterValue", "already has an interface attached at device index '1'"},
		{"fourth ENI on m5.large", e3, inst, aws.Int32(3), nil, "AttachmentLimitExceeded", "Interface count 4 exceeds the limit for m5.large"},
		{"ENI already attached", e1, nano, aws.Int32(1), nil, "InvalidNetworkInterface.InUse", e1},
		{"other availability zone", inB, inst, aws.Int32(3), nil, "InvalidParameterCombination", "availability zone"},
		{"other VPC", inOther, inst, aws.Int32(3), nil, "InvalidParameterCombination", "VPC"},
		{"unknown instance", e3, "i-00000000000000000", aws.Int32(1), nil, "InvalidInstanceID.NotFound", ""},
		{"unknown ENI", "eni-00000000000000000", inst, aws.Int32(1), nil, "InvalidNetworkInterfaceID.NotFound", ""},
		{"malformed ENI", "nic-1", inst, aws.Int32(1), nil, "InvalidNetworkInterfaceID.Malformed", ""},
		{"terminated instance", e3, gone, aws.Int32(1), nil, "IncorrectInstanceState", gone},
		{"no such network card", e3, nano, aws.Int32(1), aws.Int32(1), "InvalidParameterValue", "networkCardIndex"},
		{"negative device index", e3, nano, aws.Int32(-1), nil, "InvalidParameterValue", "deviceIndex"},
		{"too many addresses for t3.nano", big, nano, aws.Int32(1), nil, "PrivateIpAddressLimitExceeded", ""},
		{"prefixes on a Xen type", withPrefix, xen, aws.Int32(1), nil, "InvalidParameterValue", "prefix"},
	} {
		_, err := c.AttachNetworkInterface(ctx, &ec2sdk.AttachNetworkInterfaceInput{NetworkInterfaceId: &tc.eni, InstanceId: &tc.inst, DeviceIndex: tc.index, NetworkCardIndex: tc.card})
		wantErr(t, tc.name, err, tc.code, tc.contains)
	}
	// Failed attachments leave nothing behind.
	for _, id := range []string{e3, big, withPrefix, inB, inOther} {
		if e := describeENI(t, c, id); e.Status != types.NetworkInterfaceStatusAvailable || e.Attachment != nil {
			t.Errorf("%s after failed attach: %s %+v", id, e.Status, e.Attachment)
		}
	}

	// t3.nano: the primary plus one.
	attach(t, c, e3, nano, 1)
	e4 := plainENI(t, c, subID)
	_, err = c.AttachNetworkInterface(ctx, &ec2sdk.AttachNetworkInterfaceInput{NetworkInterfaceId: &e4, InstanceId: &nano, DeviceIndex: aws.Int32(2)})
	wantErr(t, "third ENI on t3.nano", err, "AttachmentLimitExceeded", "Interface count 3 exceeds the limit for t3.nano")
	// An ENI with prefixes attaches to a Nitro type.
	attach(t, c, withPrefix, runOne(t, c, subID, types.InstanceTypeM5Large), 1)
}

func TestAttachDetachTransitions(t *testing.T) {
	cfg := testConfig()
	cfg.AttachDelayMin, cfg.AttachDelayMax = 400*time.Millisecond, 600*time.Millisecond
	svc, err := New(cfg, t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	hooks := &recordingHooks{}
	svc.SetHooks(hooks)
	runCtx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go svc.Run(runCtx)
	c := newTestClientWith(t, svc)
	ctx := context.Background()
	_, subID := testVPC(t, c)
	inst := runOne(t, c, subID, types.InstanceTypeM5Large)
	e := plainENI(t, c, subID)
	start := available(t, c, subID)

	out, err := c.AttachNetworkInterface(ctx, &ec2sdk.AttachNetworkInterfaceInput{NetworkInterfaceId: &e, InstanceId: &inst, DeviceIndex: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	if got := describeENI(t, c, e); got.Status != types.NetworkInterfaceStatusAttaching || got.Attachment.Status != types.AttachmentStatusAttaching {
		t.Fatalf("right after attach: %s / %s", got.Status, got.Attachment.Status)
	}
	if len(hooks.seen("attached "+e)) != 0 {
		t.Fatal("datapath told about an attachment still attaching")
	}
	waitFor(t, "attached", func() bool {
		got := describeENI(t, c, e)
		return got.Status == types.NetworkInterfaceStatusInUse && got.Attachment.Status == types.AttachmentStatusAttached
	})
	if got := describeENI(t, c, e).Attachment; *got.InstanceId != inst || *got.DeviceIndex != 1 || *got.AttachmentId != *out.AttachmentId || *got.DeleteOnTermination {
		t.Fatalf("attachment %+v", got)
	}
	waitFor(t, "datapath attach", func() bool { return len(hooks.seen("attached "+e)) == 1 })

	primary := describeInstancePrimaryAttachment(t, c, inst)
	_, err = c.DetachNetworkInterface(ctx, &ec2sdk.DetachNetworkInterfaceInput{AttachmentId: &primary})
	wantErr(t, "detach primary", err, "OperationNotPermitted", "device index 0")
	_, err = c.DetachNetworkInterface(ctx, &ec2sdk.DetachNetworkInterfaceInput{AttachmentId: aws.String("eni-attach-00000000000000000")})
	wantErr(t, "detach unknown", err, "InvalidAttachmentID.NotFound", "")
	_, err = c.DetachNetworkInterface(ctx, &ec2sdk.DetachNetworkInterfaceInput{AttachmentId: aws.String("bogus")})
	wantErr(t, "detach malformed", err, "InvalidAttachmentID.Malformed", "")
	_, err = c.DeleteNetworkInterface(ctx, &ec2sdk.DeleteNetworkInterfaceInput{NetworkInterfaceId: &e})
	wantErr(t, "delete attached", err, "InvalidNetworkInterface.InUse", e)

	if _, err := c.DetachNetworkInterface(ctx, &ec2sdk.DetachNetworkInterfaceInput{AttachmentId: out.AttachmentId, Force: aws.Bool(true)}); err != nil {
		t.Fatal(err)
	}
	if got := describeENI(t, c, e); got.Status != types.NetworkInterfaceStatusDetaching || got.Attachment.Status != types.AttachmentStatusDetaching {
		t.Fatalf("right after detach: %s", got.Status)
	}
	_, err = c.DeleteNetworkInterface(ctx, &ec2sdk.DeleteNetworkInterfaceInput{NetworkInterfaceId: &e})
	wantErr(t, "delete detaching", err, "InvalidNetworkInterface.InUse", e)
	if _, err := c.DetachNetworkInterface(ctx, &ec2sdk.DetachNetworkInterfaceInput{AttachmentId: out.AttachmentId}); err != nil {
		t.Fatalf("detach again while detaching: %v", err)
	}
	waitFor(t, "available", func() bool {
		got := describeENI(t, c, e)
		return got.Status == types.NetworkInterfaceStatusAvailable && got.Attachment == nil
	})
	waitFor(t, "datapath detach", func() bool { return len(hooks.seen("detached "+e)) == 1 })
	_, err = c.DetachNetworkInterface(ctx, &ec2sdk.DetachNetworkInterfaceInput{AttachmentId: out.AttachmentId})
	wantErr(t, "detach a finished attachment", err, "InvalidAttachmentID.NotFound", "")

	// Detaching while still attaching: the datapath sees attach, then detach.
	quick := plainENI(t, c, subID)
	qa, err := c.AttachNetworkInterface(ctx, &ec2sdk.AttachNetworkInterfaceInput{NetworkInterfaceId: &quick, InstanceId: &inst, DeviceIndex: aws.Int32(2)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.DetachNetworkInterface(ctx, &ec2sdk.DetachNetworkInterfaceInput{AttachmentId: qa.AttachmentId}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "quick detach", func() bool { return eniStatusOf(t, c, quick) == types.NetworkInterfaceStatusAvailable })
	waitFor(t, "quick datapath events", func() bool {
		return len(hooks.seen("attached "+quick)) == 1 && len(hooks.seen("detached "+quick)) == 1
	})
	var order []string
	for _, ev := range hooks.seen("") {
		if strings.HasSuffix(ev, quick) {
			order = append(order, ev)
		}
	}
	if !slices.Equal(order, []string{"attached " + quick, "detached " + quick}) {
		t.Fatalf("datapath events for %s: %v", quick, order)
	}

	// Deleting returns every address to the subnet.
	for _, id := range []string{e, quick} {
		if _, err := c.DeleteNetworkInterface(ctx, &ec2sdk.DeleteNetworkInterfaceInput{NetworkInterfaceId: &id}); err != nil {
			t.Fatal(err)
		}
	}
	_, err = c.DescribeNetworkInterfaces(ctx, &ec2sdk.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{e}})
	wantErr(t, "deleted ENI", err, "InvalidNetworkInterfaceID.NotFound", e)
	_, err = c.DeleteNetworkInterface(ctx, &ec2sdk.DeleteNetworkInterfaceInput{NetworkInterfaceId: &e})
	wantErr(t, "delete twice", err, "InvalidNetworkInterfaceID.NotFound", e)
	if got := available(t, c, subID); got != start+1 {
		t.Fatalf("available %d after deleting, want %d", got, start+1)
	}
	checkAccounting(t, svc, subID)
}

func describeInstancePrimaryAttachment(t *testing.T, c *ec2sdk.Client, inst string) string {
	t.Helper()
	out, err := c.DescribeInstances(context.Background(), &ec2sdk.DescribeInstancesInput{InstanceIds: []string{inst}})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range out.Reservations[0].Instances[0].NetworkInterfaces {
		if *n.Attachment.DeviceIndex == 0 {
			return *n.Attachment.AttachmentId
		}
	}
	t.Fatal("no primary ENI")
	return ""
}

func TestAssignPrivateIPAddresses(t *testing.T) {
	c, svc := newTestClient(t)
	hooks := &recordingHooks{}
	svc.SetHooks(hooks)
	ctx := context.Background()
	_, subID := testVPC(t, c)
	inst := runOne(t, c, subID, types.InstanceTypeM5Large)
	e := plainENI(t, c, subID)
	attach(t, c, e, inst, 1)
	start := available(t, c, subID)
	subnet := netip.MustParsePrefix("10.0.1.0/24")

	// ipamd asks for a batch: 1 primary + 9 secondary = m5.large's 10.
	out, err := c.AssignPrivateIpAddresses(ctx, &ec2sdk.AssignPrivateIpAddressesInput{NetworkInterfaceId: &e, SecondaryPrivateIpAddressCount: aws.Int32(9)})
	if err != nil {
		t.Fatal(err)
	}
	if *out.NetworkInterfaceId != e || len(out.AssignedPrivateIpAddresses) != 9 || len(out.AssignedIpv4Prefixes) != 0 {
		t.Fatalf("assign response: %s %d addresses %d prefixes", *out.NetworkInterfaceId, len(out.AssignedPrivateIpAddresses), len(out.AssignedIpv4Prefixes))
	}
	got := addressesOf(t, c, e)
	if len(got) != 10 {
		t.Fatalf("ENI has %d addresses, want 10", len(got))
	}
	for _, a := range out.AssignedPrivateIpAddresses {
		ip := netip.MustParseAddr(*a.PrivateIpAddress)
		if !subnet.Contains(ip) || !slices.Contains(got[1:], ip.String()) {
			t.Fatalf("assigned %s is not a secondary address of the ENI in the subnet", ip)
		}
	}
	if n := available(t, c, subID); n != start-9 {
		t.Fatalf("available %d, want %d", n, start-9)
	}
	if ev := hooks.seen("addresses " + e); len(ev) != 1 || !strings.HasSuffix(ev[0], "ipv4=10 prefixes=0 ipv6=0") {
		t.Fatalf("datapath told %v", ev)
	}

	_, err = c.AssignPrivateIpAddresses(ctx, &ec2sdk.AssignPrivateIpAddressesInput{NetworkInterfaceId: &e, SecondaryPrivateIpAddressCount: aws.Int32(1)})
	wantErr(t, "11th address", err, "PrivateIpAddressLimitExceeded", "Number of private addresses will exceed limit.")
	if n := available(t, c, subID); n != start-9 {
		t.Fatalf("failed assign changed the subnet: %d", n)
	}

	// Unassign: the primary and unknown addresses are refused, all or nothing.
	primary, secondaries := got[0], got[1:]
	stranger := freeAddresses(t, svc, subID, 1)[0]
	for _, tc := range []struct {
		name  string
		addrs []string
		code  string
		msg   string
	}{
		{"primary", []string{secondaries[0], primary}, "InvalidParameterValue", "primary"},
		{"not on the ENI", []string{secondaries[0], stranger}, "InvalidParameterValue", "Some of the specified addresses are not assigned to interface " + e},
		{"nothing", nil, "MissingParameter", ""},
	} {
		_, err := c.UnassignPrivateIpAddresses(ctx, &ec2sdk.UnassignPrivateIpAddressesInput{NetworkInterfaceId: &e, PrivateIpAddresses: tc.addrs})
		wantErr(t, "unassign "+tc.name, err, tc.code, tc.msg)
	}
	if n := len(addressesOf(t, c, e)); n != 10 {
		t.Fatalf("failed unassign changed the ENI: %d addresses", n)
	}
	if _, err := c.UnassignPrivateIpAddresses(ctx, &ec2sdk.UnassignPrivateIpAddressesInput{NetworkInterfaceId: &e, PrivateIpAddresses: secondaries[:3]}); err != nil {
		t.Fatal(err)
	}
	if left := addressesOf(t, c, e); len(left) != 7 || slices.ContainsFunc(secondaries[:3], func(a string) bool { return slices.Contains(left, a) }) {
		t.Fatalf("after unassigning 3: %v", left)
	}
	if n := available(t, c, subID); n != start-6 {
		t.Fatalf("available %d after unassign, want %d", n, start-6)
	}

	// Specific addresses, and all-or-nothing when one of them is taken.
	// The other ENI first: its primary is drawn at random and could take
	// an address picked as free before it.
	other := plainENI(t, c, subID)
	otherPrimary := addressesOf(t, c, other)[0]
	free := freeAddresses(t, svc, subID, 2)
	before := available(t, c, subID)
	_, err = c.AssignPrivateIpAddresses(ctx, &ec2sdk.AssignPrivateIpAddressesInput{NetworkInterfaceId: &e, PrivateIpAddresses: []string{free[0], otherPrimary}})
	wantErr(t, "address in use", err, "InvalidIPAddress.InUse", otherPrimary)
	if n := available(t, c, subID); n != before {
		t.Fatalf("failed assign leaked %d addresses", before-n)
	}
	out, err = c.AssignPrivateIpAddresses(ctx, &ec2sdk.AssignPrivateIpAddressesInput{NetworkInterfaceId: &e, PrivateIpAddresses: free})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.AssignedPrivateIpAddresses) != 2 || *out.AssignedPrivateIpAddresses[0].PrivateIpAddress != free[0] {
		t.Fatalf("assigned %+v, want %v", out.AssignedPrivateIpAddresses, free)
	}

	// AllowReassignment moves a secondary address between ENIs, never a primary.
	o, err := c.AssignPrivateIpAddresses(ctx, &ec2sdk.AssignPrivateIpAddressesInput{NetworkInterfaceId: &other, SecondaryPrivateIpAddressCount: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	moving := *o.AssignedPrivateIpAddresses[0].PrivateIpAddress
	_, err = c.AssignPrivateIpAddresses(ctx, &ec2sdk.AssignPrivateIpAddressesInput{NetworkInterfaceId: &e, PrivateIpAddresses: []string{moving}})
	wantErr(t, "taken without reassignment", err, "InvalidIPAddress.InUse", moving)
	before = available(t, c, subID)
	if _, err := c.AssignPrivateIpAddresses(ctx, &ec2sdk.AssignPrivateIpAddressesInput{NetworkInterfaceId: &e, PrivateIpAddresses: []string{moving}, AllowReassignment: aws.Bool(true)}); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(addressesOf(t, c, e), moving) || slices.Contains(addressesOf(t, c, other), moving) {
		t.Fatalf("%s not moved from %s to %s", moving, other, e)
	}
	if n := available(t, c, subID); n != before {
		t.Fatalf("reassignment changed the free count: %d -> %d", before, n)
	}
	if ev := hooks.seen("addresses " + other); len(ev) != 2 || !strings.Contains(ev[1], "ipv4=1 ") {
		t.Fatalf("datapath not told that %s lost an address: %v", other, ev)
	}
	_, err = c.AssignPrivateIpAddresses(ctx, &ec2sdk.AssignPrivateIpAddressesInput{NetworkInterfaceId: &e, PrivateIpAddresses: []string{otherPrimary}, AllowReassignment: aws.Bool(true)})
	if errCode(err) != "InvalidIPAddress.InUse" && errCode(err) != "PrivateIpAddressLimitExceeded" {
		t.Fatalf("reassigning a primary address: %v", err)
	}

	// Bad requests, against an unattached ENI so that no limit interferes.
	spare := plainENI(t, c, subID)
	before = available(t, c, subID)
	for _, tc := range []struct {
		name string
		in   ec2sdk.AssignPrivateIpAddressesInput
		code string
	}{
		{"count and addresses", ec2sdk.AssignPrivateIpAddressesInput{SecondaryPrivateIpAddressCount: aws.Int32(1), PrivateIpAddresses: free[:1]}, "InvalidParameterCombination"},
		{"addresses and prefixes", ec2sdk.AssignPrivateIpAddressesInput{PrivateIpAddresses: free[:1], Ipv4PrefixCount: aws.Int32(1)}, "InvalidParameterCombination"},
		{"count and prefix count", ec2sdk.AssignPrivateIpAddressesInput{SecondaryPrivateIpAddressCount: aws.Int32(1), Ipv4PrefixCount: aws.Int32(1)}, "InvalidParameterCombination"},
		{"prefix count and prefixes", ec2sdk.AssignPrivateIpAddressesInput{Ipv4PrefixCount: aws.Int32(1), Ipv4Prefixes: []string{"10.0.1.16/28"}}, "InvalidParameterCombination"},
		{"negative count", ec2sdk.AssignPrivateIpAddressesInput{SecondaryPrivateIpAddressCount: aws.Int32(-1)}, "InvalidParameterValue"},
		{"nothing to assign", ec2sdk.AssignPrivateIpAddressesInput{}, "MissingParameter"},
		{"outside the subnet", ec2sdk.AssignPrivateIpAddressesInput{PrivateIpAddresses: []string{"10.0.2.10"}}, "InvalidParameterValue"},
		{"reserved by AWS", ec2sdk.AssignPrivateIpAddressesInput{PrivateIpAddresses: []string{"10.0.1.1"}}, "InvalidParameterValue"},
		{"broadcast", ec2sdk.AssignPrivateIpAddressesInput{PrivateIpAddresses: []string{"10.0.1.255"}}, "InvalidParameterValue"},
		{"not an address", ec2sdk.AssignPrivateIpAddressesInput{PrivateIpAddresses: []string{"10.0.1.x"}}, "InvalidParameterValue"},
		{"duplicate address", ec2sdk.AssignPrivateIpAddressesInput{PrivateIpAddresses: []string{free[1], free[1]}}, "InvalidIPAddress.InUse"},
		{"absurd count", ec2sdk.AssignPrivateIpAddressesInput{SecondaryPrivateIpAddressCount: aws.Int32(1 << 30)}, "PrivateIpAddressLimitExceeded"},
	} {
		in := tc.in
		in.NetworkInterfaceId = &spare
		_, err := c.AssignPrivateIpAddresses(ctx, &in)
		wantErr(t, tc.name, err, tc.code, "")
	}
	_, err = c.AssignPrivateIpAddresses(ctx, &ec2sdk.AssignPrivateIpAddressesInput{NetworkInterfaceId: aws.String("eni-00000000000000000"), SecondaryPrivateIpAddressCount: aws.Int32(1)})
	wantErr(t, "unknown ENI", err, "InvalidNetworkInterfaceID.NotFound", "")
	if n := available(t, c, subID); n != before {
		t.Fatalf("bad requests leaked %d addresses", before-n)
	}
	if n := len(addressesOf(t, c, spare)); n != 1 {
		t.Fatalf("bad requests changed %s: %d addresses", spare, n)
	}
	checkAccounting(t, svc, subID)
}

func TestIPv4Prefixes(t *testing.T) {
	c, svc := newTestClient(t)
	ctx := context.Background()
	vpcID, _ := testVPC(t, c)
	subID := createSubnet(t, c, vpcID, "10.0.16.0/20", "us-west-2a")
	subnet := netip.MustParsePrefix("10.0.16.0/20")
	inst := runOne(t, c, subID, types.InstanceTypeM5Large)
	e := plainENI(t, c, subID)
	attach(t, c, e, inst, 1)
	start := available(t, c, subID)

	out, err := c.AssignPrivateIpAddresses(ctx, &ec2sdk.AssignPrivateIpAddressesInput{NetworkInterfaceId: &e, Ipv4PrefixCount: aws.Int32(2)})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.AssignedIpv4Prefixes) != 2 || len(out.AssignedPrivateIpAddresses) != 0 {
		t.Fatalf("assigned %+v", out)
	}
	var prefixes []string
	for _, p := range out.AssignedIpv4Prefixes {
		pp := netip.MustParsePrefix(*p.Ipv4Prefix)
		if pp.Bits() != 28 || pp.Masked() != pp || !subnet.Contains(pp.Addr()) || slices.Contains(prefixes, pp.String()) {
			t.Fatalf("bad prefix %s", pp)
		}
		prefixes = append(prefixes, pp.String())
	}
	if got := describeENI(t, c, e).Ipv4Prefixes; len(got) != 2 {
		t.Fatalf("ENI prefixes %+v", got)
	}
	if n := available(t, c, subID); n != start-32 {
		t.Fatalf("available %d, want %d (two /28s)", n, start-32)
	}

	// Each prefix takes one of the 10 slots: 1 primary + 2 prefixes + 7 addresses.
	if _, err := c.AssignPrivateIpAddresses(ctx, &ec2sdk.AssignPrivateIpAddressesInput{NetworkInterfaceId: &e, SecondaryPrivateIpAddressCount: aws.Int32(7)}); err != nil {
		t.Fatal(err)
	}
	_, err = c.AssignPrivateIpAddresses(ctx, &ec2sdk.AssignPrivateIpAddressesInput{NetworkInterfaceId: &e, Ipv4PrefixCount: aws.Int32(1)})
	wantErr(t, "prefix over the limit", err, "PrivateIpAddressLimitExceeded", "")
	if n := available(t, c, subID); n != start-39 {
		t.Fatalf("available %d, want %d", n, start-39)
	}

	// Unassign a prefix, then take exactly that one back.
	if _, err := c.UnassignPrivateIpAddresses(ctx, &ec2sdk.UnassignPrivateIpAddressesInput{NetworkInterfaceId: &e, Ipv4Prefixes: prefixes[:1]}); err != nil {
		t.Fatal(err)
	}
	if n := available(t, c, subID); n != start-23 {
		t.Fatalf("available %d after unassigning a prefix, want %d", n, start-23)
	}
	_, err = c.UnassignPrivateIpAddresses(ctx, &ec2sdk.UnassignPrivateIpAddressesInput{NetworkInterfaceId: &e, Ipv4Prefixes: prefixes[:1]})
	wantErr(t, "unassign a prefix twice", err, "InvalidParameterValue", "not assigned")
	for _, tc := range []struct{ name, prefix string }{
		{"misaligned", "10.0.16.8/28"},
		{"not a /28", "10.0.16.0/27"},
		{"outside the subnet", "10.0.64.0/28"},
		{"holding reserved addresses", "10.0.16.0/28"},
		{"not a prefix", "x"},
	} {
		_, err := c.AssignPrivateIpAddresses(ctx, &ec2sdk.AssignPrivateIpAddressesInput{NetworkInterfaceId: &e, Ipv4Prefixes: []string{tc.prefix}})
		wantErr(t, "prefix "+tc.name, err, "InvalidParameterValue", "")
	}
	out, err = c.AssignPrivateIpAddresses(ctx, &ec2sdk.AssignPrivateIpAddressesInput{NetworkInterfaceId: &e, Ipv4Prefixes: prefixes[:1]})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.AssignedIpv4Prefixes) != 1 || *out.AssignedIpv4Prefixes[0].Ipv4Prefix != prefixes[0] {
		t.Fatalf("specific prefix: %+v", out.AssignedIpv4Prefixes)
	}
	// The addresses of a delegated prefix are not free for anyone else.
	inside := netip.MustParsePrefix(prefixes[0]).Addr().Next().String()
	spare := plainENI(t, c, subID)
	_, err = c.AssignPrivateIpAddresses(ctx, &ec2sdk.AssignPrivateIpAddressesInput{NetworkInterfaceId: &spare, PrivateIpAddresses: []string{inside}, AllowReassignment: aws.Bool(true)})
	wantErr(t, "address inside a delegated prefix", err, "InvalidIPAddress.InUse", "")

	// Xen types do not delegate prefixes.
	xen := runOne(t, c, subID, types.InstanceTypeT2Micro)
	x := plainENI(t, c, subID)
	attach(t, c, x, xen, 1)
	_, err = c.AssignPrivateIpAddresses(ctx, &ec2sdk.AssignPrivateIpAddressesInput{NetworkInterfaceId: &x, Ipv4PrefixCount: aws.Int32(1)})
	wantErr(t, "prefix on t2.micro", err, "InvalidParameterValue", "t2.micro")
	checkAccounting(t, svc, subID)
}

func TestSubnetFragmentationAndExhaustion(t *testing.T) {
	c, svc := newTestClient(t)
	ctx := context.Background()
	vpcID, _ := testVPC(t, c)

	// A /26 has four /28 blocks; the first holds the reserved addresses and
	// the last the broadcast address, so two can be delegated.
	subID := createSubnet(t, c, vpcID, "10.0.5.0/26", "us-west-2a")
	e := createENI(t, c, &ec2sdk.CreateNetworkInterfaceInput{SubnetId: &subID, PrivateIpAddress: aws.String("10.0.5.5")})
	out, err := c.AssignPrivateIpAddresses(ctx, &ec2sdk.AssignPrivateIpAddressesInput{NetworkInterfaceId: &e, Ipv4PrefixCount: aws.Int32(2)})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range out.AssignedIpv4Prefixes {
		got = append(got, *p.Ipv4Prefix)
	}
	slices.Sort(got)
	if !slices.Equal(got, []string{"10.0.5.16/28", "10.0.5.32/28"}) {
		t.Fatalf("prefixes of a /26: %v", got)
	}
	_, err = c.AssignPrivateIpAddresses(ctx, &ec2sdk.AssignPrivateIpAddressesInput{NetworkInterfaceId: &e, Ipv4PrefixCount: aws.Int32(1)})
	wantErr(t, "third prefix in a /26", err, "InsufficientCidrBlocks", "")
	if _, err := c.UnassignPrivateIpAddresses(ctx, &ec2sdk.UnassignPrivateIpAddressesInput{NetworkInterfaceId: &e, Ipv4Prefixes: got}); err != nil {
		t.Fatal(err)
	}
	if n := available(t, c, subID); n != 64-5-1 {
		t.Fatalf("available %d, want %d", n, 64-5-1)
	}

	// Scatter single addresses over the subnet the way random allocation
	// does: one address in each delegable block leaves no free /28 although
	// most addresses are free.
	for _, a := range []string{"10.0.5.27", "10.0.5.44"} {
		if _, err := c.AssignPrivateIpAddresses(ctx, &ec2sdk.AssignPrivateIpAddressesInput{NetworkInterfaceId: &e, PrivateIpAddresses: []string{a}}); err != nil {
			t.Fatalf("assign %s: %v", a, err)
		}
	}
	before := available(t, c, subID)
	_, err = c.AssignPrivateIpAddresses(ctx, &ec2sdk.AssignPrivateIpAddressesInput{NetworkInterfaceId: &e, Ipv4PrefixCount: aws.Int32(1)})
	wantErr(t, "prefix in a fragmented subnet", err, "InsufficientCidrBlocks", "")
	if n := available(t, c, subID); n != before || before != 64-5-3 {
		t.Fatalf("available %d -> %d after a failed prefix call", before, n)
	}
	if _, err := c.AssignPrivateIpAddresses(ctx, &ec2sdk.AssignPrivateIpAddressesInput{NetworkInterfaceId: &e, SecondaryPrivateIpAddressCount: aws.Int32(5)}); err != nil {
		t.Fatalf("single addresses still fit: %v", err)
	}
	checkAccounting(t, svc, subID)

	// A /28 has 11 usable addresses: asking for more fails without taking any.
	tiny := createSubnet(t, c, vpcID, "10.0.6.0/28", "us-west-2a")
	te := plainENI(t, c, tiny)
	_, err = c.AssignPrivateIpAddresses(ctx, &ec2sdk.AssignPrivateIpAddressesInput{NetworkInterfaceId: &te, SecondaryPrivateIpAddressCount: aws.Int32(11)})
	wantErr(t, "more than the subnet has", err, "InsufficientFreeAddressesInSubnet", "")
	if n := available(t, c, tiny); n != 10 {
		t.Fatalf("available %d after a failed call, want 10", n)
	}
	if _, err := c.AssignPrivateIpAddresses(ctx, &ec2sdk.AssignPrivateIpAddressesInput{NetworkInterfaceId: &te, SecondaryPrivateIpAddressCount: aws.Int32(10)}); err != nil {
		t.Fatal(err)
	}
	if n := available(t, c, tiny); n != 0 {
		t.Fatalf("available %d, want 0", n)
	}
	_, err = c.AssignPrivateIpAddresses(ctx, &ec2sdk.AssignPrivateIpAddressesInput{NetworkInterfaceId: &te, SecondaryPrivateIpAddressCount: aws.Int32(1)})
	wantErr(t, "full subnet", err, "InsufficientFreeAddressesInSubnet", "")
	checkAccounting(t, svc, tiny)

	// Exhaustion injected by the fault layer.
	faulty := createSubnet(t, c, vpcID, "10.0.7.0/24", "us-west-2a")
	fe := plainENI(t, c, faulty)
	if err := svc.Update(ctx, func(st *State) error {
		st.Subnets[faulty].ExhaustedByFault = true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		in   ec2sdk.AssignPrivateIpAddressesInput
		code string
	}{
		{"count", ec2sdk.AssignPrivateIpAddressesInput{SecondaryPrivateIpAddressCount: aws.Int32(1)}, "InsufficientFreeAddressesInSubnet"},
		{"address", ec2sdk.AssignPrivateIpAddressesInput{PrivateIpAddresses: []string{"10.0.7.100"}}, "InsufficientFreeAddressesInSubnet"},
		{"prefix count", ec2sdk.AssignPrivateIpAddressesInput{Ipv4PrefixCount: aws.Int32(1)}, "InsufficientCidrBlocks"},
		{"prefix", ec2sdk.AssignPrivateIpAddressesInput{Ipv4Prefixes: []string{"10.0.7.64/28"}}, "InsufficientCidrBlocks"},
	} {
		in := tc.in
		in.NetworkInterfaceId = &fe
		_, err := c.AssignPrivateIpAddresses(ctx, &in)
		wantErr(t, "exhausted subnet, "+tc.name, err, tc.code, "")
	}
	checkAccounting(t, svc, faulty)
}

func TestDatapathRefusalRollsBack(t *testing.T) {
	c, svc := newTestClient(t)
	hooks := &recordingHooks{}
	svc.SetHooks(hooks)
	ctx := context.Background()
	vpc, err := c.CreateVpc(ctx, &ec2sdk.CreateVpcInput{CidrBlock: aws.String("10.7.0.0/16"), AmazonProvidedIpv6CidrBlock: aws.Bool(true)})
	if err != nil {
		t.Fatal(err)
	}
	subID := createSubnet(t, c, *vpc.Vpc.VpcId, "10.7.1.0/24", "us-west-2a")
	a, b := plainENI(t, c, subID), plainENI(t, c, subID)
	o, err := c.AssignPrivateIpAddresses(ctx, &ec2sdk.AssignPrivateIpAddressesInput{NetworkInterfaceId: &b, SecondaryPrivateIpAddressCount: aws.Int32(2)})
	if err != nil {
		t.Fatal(err)
	}
	moving := *o.AssignedPrivateIpAddresses[0].PrivateIpAddress
	if _, err := c.AssignIpv6Addresses(ctx, &ec2sdk.AssignIpv6AddressesInput{NetworkInterfaceId: &a, Ipv6AddressCount: aws.Int32(1)}); err != nil {
		t.Fatal(err)
	}
	wantA, wantB := describeENI(t, c, a), describeENI(t, c, b)
	free := available(t, c, subID)

	hooks.setFail(true)
	for name, call := range map[string]func() error{
		"assign": func() error {
			_, err := c.AssignPrivateIpAddresses(ctx, &ec2sdk.AssignPrivateIpAddressesInput{NetworkInterfaceId: &a, SecondaryPrivateIpAddressCount: aws.Int32(3)})
			return err
		},
		"assign prefix": func() error {
			_, err := c.AssignPrivateIpAddresses(ctx, &ec2sdk.AssignPrivateIpAddressesInput{NetworkInterfaceId: &a, Ipv4PrefixCount: aws.Int32(1)})
			return err
		},
		"reassign": func() error {
			_, err := c.AssignPrivateIpAddresses(ctx, &ec2sdk.AssignPrivateIpAddressesInput{NetworkInterfaceId: &a, PrivateIpAddresses: []string{moving}, AllowReassignment: aws.Bool(true)})
			return err
		},
		"unassign": func() error {
			_, err := c.UnassignPrivateIpAddresses(ctx, &ec2sdk.UnassignPrivateIpAddressesInput{NetworkInterfaceId: &b, PrivateIpAddresses: []string{moving}})
			return err
		},
		"assign IPv6": func() error {
			_, err := c.AssignIpv6Addresses(ctx, &ec2sdk.AssignIpv6AddressesInput{NetworkInterfaceId: &a, Ipv6AddressCount: aws.Int32(2)})
			return err
		},
		"unassign IPv6": func() error {
			_, err := c.UnassignIpv6Addresses(ctx, &ec2sdk.UnassignIpv6AddressesInput{NetworkInterfaceId: &a, Ipv6Addresses: []string{*wantA.Ipv6Addresses[0].Ipv6Address}})
			return err
		},
	} {
		if err := call(); err == nil {
			t.Errorf("%s succeeded although the datapath refused it", name)
		}
		gotA, gotB := describeENI(t, c, a), describeENI(t, c, b)
		if len(gotA.PrivateIpAddresses) != len(wantA.PrivateIpAddresses) || len(gotA.Ipv4Prefixes) != 0 ||
			len(gotA.Ipv6Addresses) != len(wantA.Ipv6Addresses) || *gotA.Ipv6Addresses[0].Ipv6Address != *wantA.Ipv6Addresses[0].Ipv6Address {
			t.Errorf("%s: %s changed", name, a)
		}
		if !slices.Contains(addressesOf(t, c, b), moving) || len(gotB.PrivateIpAddresses) != len(wantB.PrivateIpAddresses) {
			t.Errorf("%s: %s changed", name, b)
		}
		if n := available(t, c, subID); n != free {
			t.Errorf("%s: available %d, want %d", name, n, free)
		}
		checkAccounting(t, svc, subID)
	}
	svc.View(ctx, func(st *State) {
		if n := len(st.Subnets[subID].IPv6Used); n != 1 {
			t.Errorf("%d IPv6 addresses allocated, want 1", n)
		}
	})
}

func TestModifyNetworkInterfaceAttribute(t *testing.T) {
	c, svc := newTestClient(t)
	ctx := context.Background()
	vpcID, subID := testVPC(t, c)
	start := available(t, c, subID)
	inst := runOne(t, c, subID, types.InstanceTypeM5Large)
	doomed, kept := plainENI(t, c, subID), plainENI(t, c, subID)
	doomedAtt := attach(t, c, doomed, inst, 1)
	keptAtt := attach(t, c, kept, inst, 2)
	if _, err := c.AssignPrivateIpAddresses(ctx, &ec2sdk.AssignPrivateIpAddressesInput{NetworkInterfaceId: &doomed, SecondaryPrivateIpAddressCount: aws.Int32(4)}); err != nil {
		t.Fatal(err)
	}
	sg, err := c.CreateSecurityGroup(ctx, &ec2sdk.CreateSecurityGroupInput{GroupName: aws.String("nodes"), Description: aws.String("nodes"), VpcId: &vpcID})
	if err != nil {
		t.Fatal(err)
	}
	other, err := c.CreateVpc(ctx, &ec2sdk.CreateVpcInput{CidrBlock: aws.String("10.8.0.0/16")})
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := c.CreateSecurityGroup(ctx, &ec2sdk.CreateSecurityGroupInput{GroupName: aws.String("x"), Description: aws.String("x"), VpcId: other.Vpc.VpcId})
	if err != nil {
		t.Fatal(err)
	}

	modify := func(in ec2sdk.ModifyNetworkInterfaceAttributeInput) error {
		_, err := c.ModifyNetworkInterfaceAttribute(ctx, &in)
		return err
	}
	for _, in := range []ec2sdk.ModifyNetworkInterfaceAttributeInput{
		{NetworkInterfaceId: &doomed, Attachment: &types.NetworkInterfaceAttachmentChanges{AttachmentId: &doomedAtt, DeleteOnTermination: aws.Bool(true)}},
		{NetworkInterfaceId: &kept, SourceDestCheck: &types.AttributeBooleanValue{Value: aws.Bool(false)}},
		{NetworkInterfaceId: &kept, Description: &types.AttributeValue{Value: aws.String("pods")}},
		{NetworkInterfaceId: &kept, Groups: []string{*sg.GroupId}},
	} {
		if err := modify(in); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name string
		in   ec2sdk.ModifyNetworkInterfaceAttributeInput
		code string
	}{
		{"two attributes", ec2sdk.ModifyNetworkInterfaceAttributeInput{NetworkInterfaceId: &kept, SourceDestCheck: &types.AttributeBooleanValue{Value: aws.Bool(true)}, Description: &types.AttributeValue{Value: aws.String("x")}}, "InvalidParameterCombination"},
		{"no attribute", ec2sdk.ModifyNetworkInterfaceAttributeInput{NetworkInterfaceId: &kept}, "MissingParameter"},
		{"another ENI's attachment", ec2sdk.ModifyNetworkInterfaceAttributeInput{NetworkInterfaceId: &kept, Attachment: &types.NetworkInterfaceAttachmentChanges{AttachmentId: &doomedAtt, DeleteOnTermination: aws.Bool(true)}}, "InvalidAttachmentID.NotFound"},
		{"attachment without the flag", ec2sdk.ModifyNetworkInterfaceAttributeInput{NetworkInterfaceId: &kept, Attachment: &types.NetworkInterfaceAttachmentChanges{AttachmentId: &keptAtt}}, "MissingParameter"},
		{"group of another VPC", ec2sdk.ModifyNetworkInterfaceAttributeInput{NetworkInterfaceId: &kept, Groups: []string{*foreign.GroupId}}, "InvalidParameterValue"},
		{"unknown group", ec2sdk.ModifyNetworkInterfaceAttributeInput{NetworkInterfaceId: &kept, Groups: []string{"sg-00000000000000000"}}, "InvalidGroup.NotFound"},
		{"unknown ENI", ec2sdk.ModifyNetworkInterfaceAttributeInput{NetworkInterfaceId: aws.String("eni-00000000000000000"), Description: &types.AttributeValue{Value: aws.String("x")}}, "InvalidNetworkInterfaceID.NotFound"},
	} {
		wantErr(t, tc.name, modify(tc.in), tc.code, "")
	}

	got := describeENI(t, c, kept)
	if *got.SourceDestCheck || *got.Description != "pods" || len(got.Groups) != 1 || *got.Groups[0].GroupId != *sg.GroupId || *got.Groups[0].GroupName != "nodes" {
		t.Fatalf("kept ENI after modify: sdc=%v desc=%q groups=%+v", *got.SourceDestCheck, *got.Description, got.Groups)
	}
	attr := func(id string, a types.NetworkInterfaceAttribute) *ec2sdk.DescribeNetworkInterfaceAttributeOutput {
		t.Helper()
		out, err := c.DescribeNetworkInterfaceAttribute(ctx, &ec2sdk.DescribeNetworkInterfaceAttributeInput{NetworkInterfaceId: &id, Attribute: a})
		if err != nil {
			t.Fatal(err)
		}
		if *out.NetworkInterfaceId != id {
			t.Fatalf("attribute of %s", *out.NetworkInterfaceId)
		}
		return out
	}
	if out := attr(doomed, types.NetworkInterfaceAttributeAttachment); out.Attachment == nil || !*out.Attachment.DeleteOnTermination || *out.Attachment.AttachmentId != doomedAtt {
		t.Fatalf("attachment attribute %+v", out.Attachment)
	}
	if out := attr(kept, types.NetworkInterfaceAttributeSourceDestCheck); *out.SourceDestCheck.Value {
		t.Fatal("sourceDestCheck attribute still true")
	}
	if out := attr(kept, types.NetworkInterfaceAttributeDescription); *out.Description.Value != "pods" {
		t.Fatalf("description attribute %q", *out.Description.Value)
	}
	if out := attr(kept, types.NetworkInterfaceAttributeGroupSet); len(out.Groups) != 1 || *out.Groups[0].GroupId != *sg.GroupId {
		t.Fatalf("groupSet attribute %+v", out.Groups)
	}
	_, err = c.DescribeNetworkInterfaceAttribute(ctx, &ec2sdk.DescribeNetworkInterfaceAttributeInput{NetworkInterfaceId: &kept, Attribute: "bogus"})
	wantErr(t, "unknown attribute", err, "InvalidParameterValue", "bogus")

	// Terminating deletes the ENI marked DeleteOnTermination with all its
	// addresses; the other one is detached and keeps its address.
	if _, err := c.TerminateInstances(ctx, &ec2sdk.TerminateInstancesInput{InstanceIds: []string{inst}}); err != nil {
		t.Fatal(err)
	}
	_, err = c.DescribeNetworkInterfaces(ctx, &ec2sdk.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{doomed}})
	wantErr(t, "ENI deleted on termination", err, "InvalidNetworkInterfaceID.NotFound", doomed)
	if got := describeENI(t, c, kept); got.Status != types.NetworkInterfaceStatusAvailable || got.Attachment != nil {
		t.Fatalf("kept ENI after termination: %s %+v", got.Status, got.Attachment)
	}
	if n := available(t, c, subID); n != start-1 {
		t.Fatalf("available %d after termination, want %d", n, start-1)
	}
	checkAccounting(t, svc, subID)
}

func TestDescribeNetworkInterfacesFiltersAndPagination(t *testing.T) {
	c, _ := newTestClient(t)
	ctx := context.Background()
	vpcID, subID := testVPC(t, c)
	inst := runOne(t, c, subID, types.InstanceTypeM5Large)
	var created []string
	for i := range 12 {
		team := []string{"a", "b"}[i%2]
		created = append(created, createENI(t, c, &ec2sdk.CreateNetworkInterfaceInput{SubnetId: &subID, TagSpecifications: []types.TagSpecification{{
			ResourceType: types.ResourceTypeNetworkInterface, Tags: []types.Tag{{Key: aws.String("team"), Value: aws.String(team)}}}}}))
	}
	attach(t, c, created[0], inst, 1)
	attach(t, c, created[1], inst, 2)

	filter := func(kv ...string) []types.Filter {
		var out []types.Filter
		for i := 0; i < len(kv); i += 2 {
			out = append(out, types.Filter{Name: aws.String(kv[i]), Values: strings.Split(kv[i+1], ",")})
		}
		return out
	}
	for _, tc := range []struct {
		name    string
		filters []types.Filter
		want    int
	}{
		{"instance", filter("attachment.instance-id", inst), 3},
		{"instance and in-use", filter("attachment.instance-id", inst, "status", "in-use"), 3},
		{"available", filter("status", "available"), 10},
		{"tag", filter("tag:team", "a"), 6},
		{"tag and instance", filter("tag:team", "a", "attachment.instance-id", inst), 1},
		{"either tag value", filter("tag:team", "a,b"), 12},
		{"device index", filter("attachment.device-index", "2"), 1},
		{"attached state", filter("attachment.status", "attached", "vpc-id", vpcID), 3},
		{"subnet", filter("subnet-id", subID), 13},
		{"no match", filter("tag:team", "c"), 0},
	} {
		out, err := c.DescribeNetworkInterfaces(ctx, &ec2sdk.DescribeNetworkInterfacesInput{Filters: tc.filters})
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if len(out.NetworkInterfaces) != tc.want {
			t.Errorf("%s: %d ENIs, want %d", tc.name, len(out.NetworkInterfaces), tc.want)
		}
	}

	p := ec2sdk.NewDescribeNetworkInterfacesPaginator(c, &ec2sdk.DescribeNetworkInterfacesInput{MaxResults: aws.Int32(5), Filters: filter("vpc-id", vpcID)})
	seen := map[string]bool{}
	pages := 0
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		if len(out.NetworkInterfaces) > 5 {
			t.Fatalf("page of %d", len(out.NetworkInterfaces))
		}
		for _, e := range out.NetworkInterfaces {
			if seen[*e.NetworkInterfaceId] {
				t.Fatalf("%s on two pages", *e.NetworkInterfaceId)
			}
			seen[*e.NetworkInterfaceId] = true
		}
	}
	if len(seen) != 13 || pages != 3 {
		t.Fatalf("%d ENIs over %d pages, want 13 over 3", len(seen), pages)
	}
	_, err := c.DescribeNetworkInterfaces(ctx, &ec2sdk.DescribeNetworkInterfacesInput{MaxResults: aws.Int32(4)})
	wantErr(t, "MaxResults below 5", err, "InvalidParameterValue", "")
	_, err = c.DescribeNetworkInterfaces(ctx, &ec2sdk.DescribeNetworkInterfacesInput{MaxResults: aws.Int32(5), NetworkInterfaceIds: created[:1]})
	wantErr(t, "IDs with MaxResults", err, "InvalidParameterCombination", "")
	_, err = c.DescribeNetworkInterfaces(ctx, &ec2sdk.DescribeNetworkInterfacesInput{Filters: filter("no-such-filter", "x")})
	wantErr(t, "unknown filter", err, "InvalidParameterValue", "")
}

func TestIPv6Addresses(t *testing.T) {
	c, svc := newTestClient(t)
	ctx := context.Background()
	v, err := c.CreateVpc(ctx, &ec2sdk.CreateVpcInput{CidrBlock: aws.String("10.6.0.0/16"), AmazonProvidedIpv6CidrBlock: aws.Bool(true)})
	if err != nil {
		t.Fatal(err)
	}
	subID := createSubnet(t, c, *v.Vpc.VpcId, "10.6.1.0/24", "us-west-2a")
	subs, err := c.DescribeSubnets(ctx, &ec2sdk.DescribeSubnetsInput{SubnetIds: []string{subID}})
	if err != nil {
		t.Fatal(err)
	}
	cidr := netip.MustParsePrefix(*subs.Subnets[0].Ipv6CidrBlockAssociationSet[0].Ipv6CidrBlock)
	inst := runOne(t, c, subID, types.InstanceTypeM5Large) // 10 IPv6 per ENI
	e := plainENI(t, c, subID)
	attach(t, c, e, inst, 1)

	out, err := c.AssignIpv6Addresses(ctx, &ec2sdk.AssignIpv6AddressesInput{NetworkInterfaceId: &e, Ipv6AddressCount: aws.Int32(2)})
	if err != nil {
		t.Fatal(err)
	}
	if *out.NetworkInterfaceId != e || len(out.AssignedIpv6Addresses) != 2 {
		t.Fatalf("assigned %v", out.AssignedIpv6Addresses)
	}
	for _, a := range out.AssignedIpv6Addresses {
		if !cidr.Contains(netip.MustParseAddr(a)) {
			t.Fatalf("%s outside %s", a, cidr)
		}
	}
	// A specific address, sent in a non-canonical spelling.
	b := cidr.Addr().As16()
	b[15] = 0x42
	specific := netip.AddrFrom16(b)
	out, err = c.AssignIpv6Addresses(ctx, &ec2sdk.AssignIpv6AddressesInput{NetworkInterfaceId: &e, Ipv6Addresses: []string{strings.ToUpper(specific.StringExpanded())}})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.AssignedIpv6Addresses) != 1 || out.AssignedIpv6Addresses[0] != specific.String() {
		t.Fatalf("specific address came back as %v, want %s", out.AssignedIpv6Addresses, specific)
	}
	outside := netip.MustParseAddr("2001:db8::1").String()
	for _, tc := range []struct {
		name string
		in   ec2sdk.AssignIpv6AddressesInput
		code string
	}{
		{"address in use", ec2sdk.AssignIpv6AddressesInput{Ipv6Addresses: []string{specific.String()}}, "InvalidIPAddress.InUse"},
		{"outside the subnet", ec2sdk.AssignIpv6AddressesInput{Ipv6Addresses: []string{outside}}, "InvalidParameterValue"},
		{"IPv4 address", ec2sdk.AssignIpv6AddressesInput{Ipv6Addresses: []string{"10.6.1.9"}}, "InvalidParameterValue"},
		{"count and addresses", ec2sdk.AssignIpv6AddressesInput{Ipv6AddressCount: aws.Int32(1), Ipv6Addresses: []string{outside}}, "InvalidParameterCombination"},
		{"nothing", ec2sdk.AssignIpv6AddressesInput{}, "MissingParameter"},
		{"negative", ec2sdk.AssignIpv6AddressesInput{Ipv6AddressCount: aws.Int32(-2)}, "InvalidParameterValue"},
		{"over the m5.large limit", ec2sdk.AssignIpv6AddressesInput{Ipv6AddressCount: aws.Int32(8)}, "PrivateIpAddressLimitExceeded"},
		{"absurd count", ec2sdk.AssignIpv6AddressesInput{Ipv6AddressCount: aws.Int32(1 << 30)}, "PrivateIpAddressLimitExceeded"},
	} {
		in := tc.in
		in.NetworkInterfaceId = &e
		_, err := c.AssignIpv6Addresses(ctx, &in)
		wantErr(t, tc.name, err, tc.code, "")
	}
	if _, err := c.AssignIpv6Addresses(ctx, &ec2sdk.AssignIpv6AddressesInput{NetworkInterfaceId: &e, Ipv6AddressCount: aws.Int32(7)}); err != nil {
		t.Fatalf("up to the limit: %v", err)
	}
	have := describeENI(t, c, e).Ipv6Addresses
	if len(have) != 10 {
		t.Fatalf("%d IPv6 addresses, want 10", len(have))
	}

	_, err = c.UnassignIpv6Addresses(ctx, &ec2sdk.UnassignIpv6AddressesInput{NetworkInterfaceId: &e, Ipv6Addresses: []string{specific.String(), outside}})
	wantErr(t, "unassign one not assigned", err, "InvalidParameterValue", "not assigned to interface "+e)
	un, err := c.UnassignIpv6Addresses(ctx, &ec2sdk.UnassignIpv6AddressesInput{NetworkInterfaceId: &e, Ipv6Addresses: []string{specific.StringExpanded()}})
	if err != nil {
		t.Fatal(err)
	}
	if *un.NetworkInterfaceId != e || !slices.Equal(un.UnassignedIpv6Addresses, []string{specific.String()}) {
		t.Fatalf("unassigned %v", un.UnassignedIpv6Addresses)
	}
	if n := len(describeENI(t, c, e).Ipv6Addresses); n != 9 {
		t.Fatalf("%d IPv6 addresses left, want 9", n)
	}
	f, err := c.DescribeNetworkInterfaces(ctx, &ec2sdk.DescribeNetworkInterfacesInput{Filters: []types.Filter{{Name: aws.String("ipv6-addresses.ipv6-address"), Values: []string{*have[0].Ipv6Address}}}})
	if err != nil || len(f.NetworkInterfaces) != 1 || *f.NetworkInterfaces[0].NetworkInterfaceId != e {
		t.Fatalf("filter by IPv6 address: %v", err)
	}

	// A subnet without an IPv6 block.
	_, v4only := testVPC(t, c)
	e4 := plainENI(t, c, v4only)
	_, err = c.AssignIpv6Addresses(ctx, &ec2sdk.AssignIpv6AddressesInput{NetworkInterfaceId: &e4, Ipv6AddressCount: aws.Int32(1)})
	wantErr(t, "IPv4-only subnet", err, "InvalidParameterValue", "IPv6")

	// Detaching and deleting returns the addresses.
	if _, err := c.DetachNetworkInterface(ctx, &ec2sdk.DetachNetworkInterfaceInput{AttachmentId: describeENI(t, c, e).Attachment.AttachmentId}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "detached", func() bool { return eniStatusOf(t, c, e) == types.NetworkInterfaceStatusAvailable })
	if _, err := c.DeleteNetworkInterface(ctx, &ec2sdk.DeleteNetworkInterfaceInput{NetworkInterfaceId: &e}); err != nil {
		t.Fatal(err)
	}
	svc.View(ctx, func(st *State) {
		if n := len(st.Subnets[subID].IPv6Used); n != 0 {
			t.Errorf("%d IPv6 addresses still allocated", n)
		}
	})
}

func TestCreateNetworkInterfaceBounds(t *testing.T) {
	c, svc := newTestClient(t)
	ctx := context.Background()
	v, err := c.CreateVpc(ctx, &ec2sdk.CreateVpcInput{CidrBlock: aws.String("10.4.0.0/16"), AmazonProvidedIpv6CidrBlock: aws.Bool(true)})
	if err != nil {
		t.Fatal(err)
	}
	subID := createSubnet(t, c, *v.Vpc.VpcId, "10.4.0.0/16", "us-west-2a")
	for _, tc := range []struct {
		name string
		in   ec2sdk.CreateNetworkInterfaceInput
	}{
		{"absurd IPv6 count", ec2sdk.CreateNetworkInterfaceInput{Ipv6AddressCount: aws.Int32(1 << 30)}},
		{"absurd IPv4 count", ec2sdk.CreateNetworkInterfaceInput{SecondaryPrivateIpAddressCount: aws.Int32(1 << 20)}},
		{"absurd prefix count", ec2sdk.CreateNetworkInterfaceInput{Ipv4PrefixCount: aws.Int32(1 << 20)}},
	} {
		in := tc.in
		in.SubnetId = &subID
		_, err := c.CreateNetworkInterface(ctx, &in)
		wantErr(t, tc.name, err, "PrivateIpAddressLimitExceeded", "")
	}
	checkAccounting(t, svc, subID)
}
