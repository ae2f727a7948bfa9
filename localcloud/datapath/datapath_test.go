package datapath_test

import (
	"context"
	"errors"
	"fmt"
	"github.com/berth-io/berth/internal/testenv"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	ec2sdk "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/berth-io/berth/localcloud/datapath"
	"github.com/berth-io/berth/localcloud/server"
)

type cloud struct {
	srv    *server.Server
	c      *ec2sdk.Client
	stop   func()
	regDir string
}

func startCloud(t testing.TB, state, reg string) *cloud {
	t.Helper()
	testenv.RequireRoot(t, "netns, loop devices")
	cfg := server.DefaultConfig(state)
	cfg.EC2.AttachDelayMin, cfg.EC2.AttachDelayMax = 50*time.Millisecond, 150*time.Millisecond
	cfg.EC2.InstanceStartDelay, cfg.EC2.VolumeCreateDelay = 0, 0
	cfg.IMDSLag = 0
	cfg.Datapath, cfg.RegistryDir = true, reg
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.New(ctx, cfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	srv.Faults.SetThrottling(false)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, ln) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("server: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	root := srv.IAM.Root()
	c := ec2sdk.New(ec2sdk.Options{Region: "us-west-2", BaseEndpoint: aws.String("http://" + ln.Addr().String()),
		Credentials: credentials.NewStaticCredentialsProvider(root.AccessKeyID, root.SecretAccessKey, ""), Retryer: aws.NopRetryer{}})
	return &cloud{srv: srv, c: c, stop: stop, regDir: reg}
}

// inNS runs fn on a thread inside the named namespace.
func inNS(t *testing.T, name string, fn func() error) error {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		h, err := netns.GetFromName(name)
		if err != nil {
			errc <- err
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			errc <- err
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- err // leave the thread locked: it dies with the goroutine
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

func sh(t *testing.T, ns string, args ...string) string {
	t.Helper()
	full := append([]string{"--net=/var/run/netns/" + ns}, args...)
	out, err := exec.Command("nsenter", full...).CombinedOutput()
	if err != nil {
		t.Fatalf("nsenter %s %v: %v\n%s", ns, args, err, out)
	}
	return string(out)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func nsExists(name string) bool {
	_, err := os.Stat("/var/run/netns/" + name)
	return err == nil
}

func (c *cloud) vpc(t *testing.T, cidr, subnet string) (string, string) {
	t.Helper()
	ctx := context.Background()
	v, err := c.c.CreateVpc(ctx, &ec2sdk.CreateVpcInput{CidrBlock: aws.String(cidr)})
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.c.CreateSubnet(ctx, &ec2sdk.CreateSubnetInput{VpcId: v.Vpc.VpcId, CidrBlock: aws.String(subnet), AvailabilityZone: aws.String("us-west-2a")})
	if err != nil {
		t.Fatal(err)
	}
	return *v.Vpc.VpcId, *s.Subnet.SubnetId
}

type node struct {
	id, eni, mac, ip string
}

func (c *cloud) run(t *testing.T, sub string, n int, typ types.InstanceType) []node {
	t.Helper()
	out, err := c.c.RunInstances(context.Background(), &ec2sdk.RunInstancesInput{ImageId: aws.String("ami-1"), InstanceType: typ,
		MinCount: aws.Int32(int32(n)), MaxCount: aws.Int32(int32(n)), SubnetId: &sub})
	if err != nil {
		t.Fatal(err)
	}
	var nodes []node
	for _, i := range out.Instances {
		e := i.NetworkInterfaces[0]
		nodes = append(nodes, node{*i.InstanceId, *e.NetworkInterfaceId, *e.MacAddress, *i.PrivateIpAddress})
	}
	for _, nd := range nodes {
		waitFor(t, "namespace of "+nd.id, func() bool { return nsExists(datapath.Namespace(nd.id)) })
	}
	return nodes
}

func (c *cloud) assign(t *testing.T, eni string, in ec2sdk.AssignPrivateIpAddressesInput) *ec2sdk.AssignPrivateIpAddressesOutput {
	t.Helper()
	in.NetworkInterfaceId = &eni
	out, err := c.c.AssignPrivateIpAddresses(context.Background(), &in)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// serveEcho listens in ns on addr and echoes one line per connection.
func serveEcho(t *testing.T, ns, addr string) {
	t.Helper()
	var ln net.Listener
	if err := inNS(t, ns, func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	echoOn(t, ln)
}

// echoOn echoes every connection to ln until the test ends.
func echoOn(t *testing.T, ln net.Listener) {
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
}

// dial connects from ns (bound to src) to dst and checks an echo.
func dial(t *testing.T, ns, src, dst string) error {
	t.Helper()
	return inNS(t, ns, func() error {
		d := net.Dialer{Timeout: 700 * time.Millisecond}
		if src != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
		}
		c, err := d.Dial("tcp", dst)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(time.Second))
		if _, err := c.Write([]byte("ping\n")); err != nil {
			return err
		}
		buf := make([]byte, 5)
		if _, err := io.ReadFull(c, buf); err != nil {
			return err
		}
		if string(buf) != "ping\n" {
			return fmt.Errorf("echo %q", buf)
		}
		return nil
	})
}

func TestVPCInABox(t *testing.T) {
	state, reg := t.TempDir(), t.TempDir()
	c := startCloud(t, state, reg)
	ctx := context.Background()
	vpcID, sub := c.vpc(t, "10.77.0.0/16", "10.77.1.0/24")
	nodes := c.run(t, sub, 2, types.InstanceTypeM5Large)
	a, b := nodes[0], nodes[1]
	nsA, nsB := datapath.Namespace(a.id), datapath.Namespace(b.id)

	// eth0 is the primary ENI: its MAC and primary address.
	link := sh(t, nsA, "ip", "-o", "addr", "show", "dev", "eth0")
	if !strings.Contains(link, a.ip+"/24") {
		t.Fatalf("eth0 of %s: %s", a.id, link)
	}
	if mac := sh(t, nsA, "cat", "/sys/class/net/eth0/address"); strings.TrimSpace(mac) != a.mac {
		// /sys is the host's here; read the MAC through netlink instead.
		var got string
		_ = inNS(t, nsA, func() error {
			l, err := netlink.LinkByName("eth0")
			if err == nil {
				got = l.Attrs().HardwareAddr.String()
			}
			return err
		})
		if got != a.mac {
			t.Fatalf("eth0 MAC %s, want %s", got, a.mac)
		}
	}

	// Secondary IPs and a prefix, configured inside the namespaces as a node would.
	secA := c.assign(t, a.eni, ec2sdk.AssignPrivateIpAddressesInput{SecondaryPrivateIpAddressCount: aws.Int32(2)})
	secB := c.assign(t, b.eni, ec2sdk.AssignPrivateIpAddressesInput{SecondaryPrivateIpAddressCount: aws.Int32(2)})
	preA := c.assign(t, a.eni, ec2sdk.AssignPrivateIpAddressesInput{Ipv4PrefixCount: aws.Int32(1)})
	a1, b1 := *secA.AssignedPrivateIpAddresses[0].PrivateIpAddress, *secB.AssignedPrivateIpAddresses[0].PrivateIpAddress
	b2 := *secB.AssignedPrivateIpAddresses[1].PrivateIpAddress
	pfx := netip.MustParsePrefix(*preA.AssignedIpv4Prefixes[0].Ipv4Prefix)
	prefixIP := pfx.Addr().Next().Next().Next().Next().Next().String() // an address inside the /28
	for _, ip := range []string{a1, prefixIP} {
		sh(t, nsA, "ip", "addr", "add", ip+"/32", "dev", "eth0")
	}
	for _, ip := range []string{b1, b2} {
		sh(t, nsB, "ip", "addr", "add", ip+"/32", "dev", "eth0")
	}
	serveEcho(t, nsB, ":7000")
	serveEcho(t, nsA, ":7000")
	time.Sleep(200 * time.Millisecond) // the router programs the new addresses
	for _, src := range []string{a.ip, a1, prefixIP} {
		for _, dst := range []string{b.ip, b1} {
			if err := dial(t, nsA, src, dst+":7000"); err != nil {
				dump(t, datapath.Namespace(vpcID), nsA, nsB)
				t.Fatalf("TCP %s -> %s through the router: %v", src, dst, err)
			}
		}
	}

	// A spoofed source (assigned to no ENI) is dropped by the router. The
	// subnet's addresses are handed out at random: pick one nobody has.
	taken := map[string]bool{a.ip: true, b.ip: true}
	for _, out := range []*ec2sdk.AssignPrivateIpAddressesOutput{secA, secB} {
		for _, x := range out.AssignedPrivateIpAddresses {
			taken[*x.PrivateIpAddress] = true
		}
	}
	spoof := ""
	for ip := netip.MustParseAddr("10.77.1.250"); spoof == ""; ip = ip.Prev() {
		if !taken[ip.String()] && !pfx.Contains(ip) {
			spoof = ip.String()
		}
	}
	sh(t, nsA, "ip", "addr", "add", spoof+"/32", "dev", "eth0")
	if err := dial(t, nsA, spoof, b.ip+":7000"); err == nil {
		t.Fatal("a spoofed source got through the source/dest check")
	}

	// Move b2 from B's ENI to A's: traffic for it follows the move.
	if _, err := c.c.UnassignPrivateIpAddresses(ctx, &ec2sdk.UnassignPrivateIpAddressesInput{NetworkInterfaceId: &b.eni, PrivateIpAddresses: []string{b2}}); err != nil {
		t.Fatal(err)
	}
	c.assign(t, a.eni, ec2sdk.AssignPrivateIpAddressesInput{PrivateIpAddresses: []string{b2}})
	sh(t, nsB, "ip", "addr", "del", b2+"/32", "dev", "eth0")
	sh(t, nsA, "ip", "addr", "add", b2+"/32", "dev", "eth0")
	var moved error
	for i := 0; i < 20; i++ {
		if moved = dial(t, nsB, b.ip, b2+":7000"); moved == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if moved != nil {
		t.Fatalf("traffic to %s did not follow it to %s: %v", b2, a.id, moved)
	}

	// The host reaches instance addresses.
	conn, err := net.DialTimeout("tcp", a.ip+":7000", time.Second)
	if err != nil {
		t.Fatalf("host -> instance: %v", err)
	}
	conn.Close()

	// IMDS inside each namespace answers for that instance only; IMDSv1 is refused.
	for _, nd := range nodes {
		var id, macs string
		var v1 int
		ns := datapath.Namespace(nd.id)
		// http.Transport dials on goroutines of its own: dial in the namespace.
		tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := inNS(t, ns, func() error {
				var err error
				c, err = (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		}}
		if err := func() error {
			cl := &http.Client{Timeout: 2 * time.Second, Transport: tr}
			req, _ := http.NewRequest(http.MethodPut, "http://169.254.169.254/latest/api/token", nil)
			req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", "60")
			resp, err := cl.Do(req)
			if err != nil {
				return err
			}
			tok, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			get := func(path string) (string, int, error) {
				req, _ := http.NewRequest(http.MethodGet, "http://169.254.169.254/latest/meta-data/"+path, nil)
				if path != "v1" {
					req.Header.Set("X-aws-ec2-metadata-token", string(tok))
				} else {
					req.URL.Path = "/latest/meta-data/instance-id"
				}
				resp, err := cl.Do(req)
				if err != nil {
					return "", 0, err
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return string(b), resp.StatusCode, nil
			}
			if id, _, err = get("instance-id"); err != nil {
				return err
			}
			if macs, _, err = get("network/interfaces/macs/"); err != nil {
				return err
			}
			_, v1, err = get("v1")
			return err
		}(); err != nil {
			t.Fatal(err)
		}
		if id != nd.id || !strings.Contains(macs, nd.mac) || v1 != http.StatusUnauthorized {
			t.Fatalf("IMDS in %s: id %q macs %q IMDSv1 %d", nd.id, id, macs, v1)
		}
	}

	// Hot-plug an ENI into A while traffic runs on eth0.
	var fails, oks atomic.Int64
	stopTraffic := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stopTraffic:
				return
			default:
			}
			if err := dial(t, nsB, b.ip, a.ip+":7000"); err != nil {
				fails.Add(1)
			} else {
				oks.Add(1)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	eni, err := c.c.CreateNetworkInterface(ctx, &ec2sdk.CreateNetworkInterfaceInput{SubnetId: &sub})
	if err != nil {
		t.Fatal(err)
	}
	att, err := c.c.AttachNetworkInterface(ctx, &ec2sdk.AttachNetworkInterfaceInput{NetworkInterfaceId: eni.NetworkInterface.NetworkInterfaceId, InstanceId: &a.id, DeviceIndex: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	var eth1MAC string
	waitFor(t, "eth1 in "+a.id, func() bool {
		_ = inNS(t, nsA, func() error {
			l, err := netlink.LinkByName("eth1")
			if err == nil {
				eth1MAC = l.Attrs().HardwareAddr.String()
			}
			return nil
		})
		return eth1MAC != ""
	})
	if eth1MAC != *eni.NetworkInterface.MacAddress {
		t.Fatalf("eth1 MAC %s, want %s", eth1MAC, *eni.NetworkInterface.MacAddress)
	}
	if _, err := c.c.DetachNetworkInterface(ctx, &ec2sdk.DetachNetworkInterfaceInput{AttachmentId: att.AttachmentId}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "eth1 gone", func() bool {
		return inNS(t, nsA, func() error { _, err := netlink.LinkByName("eth1"); return err }) != nil
	})
	close(stopTraffic)
	wg.Wait()
	if fails.Load() != 0 || oks.Load() == 0 {
		t.Fatalf("traffic on eth0 during hot-plug: %d ok, %d failed", oks.Load(), fails.Load())
	}

	// Teardown: terminate, shut down, nothing left.
	if _, err := c.c.TerminateInstances(ctx, &ec2sdk.TerminateInstancesInput{InstanceIds: []string{a.id, b.id}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "instance namespaces gone", func() bool { return !nsExists(nsA) && !nsExists(nsB) })
	c.stop()
	assertClean(t, reg, vpcID, a.id, b.id)
}

func assertClean(t *testing.T, reg string, ids ...string) {
	t.Helper()
	for _, id := range ids {
		if nsExists(datapath.Namespace(id)) {
			t.Errorf("namespace %s left behind", datapath.Namespace(id))
		}
	}
	links, _ := netlink.LinkList()
	for _, l := range links {
		for _, id := range ids {
			_, hex, _ := strings.Cut(id, "-")
			if len(hex) > 12 {
				hex = hex[:12]
			}
			if strings.HasPrefix(l.Attrs().Name, "bv") && strings.HasSuffix(l.Attrs().Name, hex) {
				t.Errorf("host link %s left behind", l.Attrs().Name)
			}
		}
	}
	left, _ := os.ReadDir(reg)
	for _, e := range left {
		b, _ := os.ReadFile(filepath.Join(reg, e.Name()))
		t.Errorf("registry still lists %s", b)
	}
}

func TestEBSVolumesAreLoopDevices(t *testing.T) {
	for _, tool := range []string{"mkfs.ext4", "mount", "umount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s missing: %v", tool, err)
		}
	}
	state, reg := t.TempDir(), t.TempDir()
	c := startCloud(t, state, reg)
	ctx := context.Background()
	_, sub := c.vpc(t, "10.78.0.0/16", "10.78.1.0/24")
	nodes := c.run(t, sub, 2, types.InstanceTypeM5Large)
	vol, err := c.c.CreateVolume(ctx, &ec2sdk.CreateVolumeInput{AvailabilityZone: aws.String("us-west-2a"), Size: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	id := *vol.VolumeId
	link := datapath.ByIDLink(id)
	mnt := t.TempDir()
	attach := func(inst string) {
		waitFor(t, "volume available", func() bool {
			o, err := c.c.DescribeVolumes(ctx, &ec2sdk.DescribeVolumesInput{VolumeIds: []string{id}})
			return err == nil && o.Volumes[0].State == types.VolumeStateAvailable
		})
		if _, err := c.c.AttachVolume(ctx, &ec2sdk.AttachVolumeInput{VolumeId: &id, InstanceId: &inst, Device: aws.String("/dev/xvdba")}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "by-id link", func() bool { _, err := os.Stat(link); return err == nil })
	}
	detach := func() {
		if _, err := c.c.DetachVolume(ctx, &ec2sdk.DetachVolumeInput{VolumeId: &id}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "by-id link gone", func() bool { _, err := os.Lstat(link); return errors.Is(err, os.ErrNotExist) })
	}
	run := func(name string, args ...string) {
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
	}
	attach(nodes[0].id)
	dev, _ := filepath.EvalSymlinks(link)
	if !strings.HasPrefix(dev, "/dev/loop") {
		t.Fatalf("by-id link points at %s", dev)
	}
	run("mkfs.ext4", "-q", "-F", link)
	run("mount", link, mnt)
	t.Cleanup(func() { _ = exec.Command("umount", mnt).Run() })
	if err := os.WriteFile(filepath.Join(mnt, "data"), []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}
	run("umount", mnt)
	detach()
	if out, _ := exec.Command("losetup", "-j", filepath.Join(state, "ebs", id+".img")).Output(); len(out) != 0 {
		t.Fatalf("loop device still bound after detach: %s", out)
	}
	attach(nodes[1].id)
	run("mount", link, mnt)
	b, err := os.ReadFile(filepath.Join(mnt, "data"))
	if err != nil || string(b) != "kept" {
		t.Fatalf("data after re-attach: %q %v", b, err)
	}
	run("umount", mnt)
	detach()
	if _, err := c.c.DeleteVolume(ctx, &ec2sdk.DeleteVolumeInput{VolumeId: &id}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(state, "ebs", id+".img")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("volume file survives DeleteVolume: %v", err)
	}
	c.stop()
	assertClean(t, reg, nodes[0].id, nodes[1].id)
}

// dump logs the datapath of the namespaces, for failures.
func dump(t *testing.T, namespaces ...string) {
	for _, ns := range namespaces {
		for _, cmd := range [][]string{{"ip", "-d", "link"}, {"ip", "addr"}, {"ip", "route"}, {"ip", "neigh"}, {"nft", "list", "ruleset"}} {
			out, _ := exec.Command("nsenter", append([]string{"--net=/var/run/netns/" + ns}, cmd...)...).CombinedOutput()
			t.Logf("%s: %v\n%s", ns, cmd, out)
		}
	}
}

// A block associated with the VPC later (AssociateVpcCidrBlock) is routed
// like the primary: instances in its subnets reach and are reached by the
// others through the router, and the host reaches them. Disassociated, the
// block's routes go.
func TestSecondaryVPCBlock(t *testing.T) {
	state, reg := t.TempDir(), t.TempDir()
	c := startCloud(t, state, reg)
	ctx := context.Background()
	vpcID, sub := c.vpc(t, "10.86.0.0/16", "10.86.1.0/24")
	assoc, err := c.c.AssociateVpcCidrBlock(ctx, &ec2sdk.AssociateVpcCidrBlockInput{VpcId: &vpcID, CidrBlock: aws.String("10.87.0.0/16")})
	if err != nil {
		t.Fatal(err)
	}
	sub2, err := c.c.CreateSubnet(ctx, &ec2sdk.CreateSubnetInput{VpcId: &vpcID, CidrBlock: aws.String("10.87.1.0/24"), AvailabilityZone: aws.String("us-west-2a")})
	if err != nil {
		t.Fatal(err)
	}
	a := c.run(t, sub, 1, types.InstanceTypeM5Large)[0]
	b := c.run(t, *sub2.Subnet.SubnetId, 1, types.InstanceTypeM5Large)[0]
	nsA, nsB := datapath.Namespace(a.id), datapath.Namespace(b.id)
	serveEcho(t, nsA, ":7000")
	serveEcho(t, nsB, ":7000")
	time.Sleep(200 * time.Millisecond) // the router programs the new addresses
	for _, tc := range []struct{ ns, dst string }{{nsA, b.ip}, {nsB, a.ip}} {
		if err := dial(t, tc.ns, "", tc.dst+":7000"); err != nil {
			dump(t, datapath.Namespace(vpcID), nsA, nsB)
			t.Fatalf("%s -> %s across the VPC's blocks: %v", tc.ns, tc.dst, err)
		}
	}
	hostRoutes := func() int {
		_, block, _ := net.ParseCIDR("10.87.0.0/16")
		rs, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: block}, netlink.RT_FILTER_DST)
		if err != nil {
			t.Fatal(err)
		}
		return len(rs)
	}
	if n := hostRoutes(); n != 1 {
		t.Fatalf("host routes to the secondary block: %d, want 1", n)
	}
	c.dialFromHost(t, b.ip+":7000")

	if _, err := c.c.TerminateInstances(ctx, &ec2sdk.TerminateInstancesInput{InstanceIds: []string{b.id}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "instance namespace gone", func() bool { return !nsExists(nsB) })
	waitFor(t, "the instance's ENI deleted", func() bool {
		_, err := c.c.DeleteSubnet(ctx, &ec2sdk.DeleteSubnetInput{SubnetId: sub2.Subnet.SubnetId})
		return err == nil
	})
	if _, err := c.c.DisassociateVpcCidrBlock(ctx, &ec2sdk.DisassociateVpcCidrBlockInput{AssociationId: assoc.CidrBlockAssociation.AssociationId}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the host route to the disassociated block gone", func() bool { return hostRoutes() == 0 })
	if _, err := c.c.TerminateInstances(ctx, &ec2sdk.TerminateInstancesInput{InstanceIds: []string{a.id}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "instance namespace gone", func() bool { return !nsExists(nsA) })
	c.stop()
	assertClean(t, reg, vpcID, a.id, b.id)
}

// dialFromHost checks an echo from the host's namespace.
func (c *cloud) dialFromHost(t *testing.T, addr string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatalf("host -> %s: %v", addr, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Write([]byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "ping\n" {
		t.Fatalf("host -> %s: echo %q %v", addr, buf, err)
	}
}
