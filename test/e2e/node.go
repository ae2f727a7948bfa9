package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	ec2sdk "github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/berth-io/berth/internal/nsrun"
)

// EC2 returns an SDK client for a localcloud, with its root credentials.
func (l *Localcloud) EC2(t testing.TB) *ec2sdk.Client {
	t.Helper()
	cfg, err := config.LoadDefaultConfig(context.Background(),
		config.WithSharedCredentialsFiles([]string{filepath.Join(l.StateDir, "credentials")}),
		config.WithSharedConfigFiles([]string{filepath.Join(l.StateDir, "config")}),
		config.WithBaseEndpoint(l.Endpoint))
	if err != nil {
		t.Fatal(err)
	}
	return ec2sdk.NewFromConfig(cfg)
}

// Instance is a localcloud instance whose namespace exists.
type Instance struct {
	ID, NetNS, PrimaryIP, PrimaryENI, SubnetID string
}

// RunInstance launches one instance and waits for its namespace.
func RunInstance(t testing.TB, c *ec2sdk.Client, subnet, typ string) Instance {
	t.Helper()
	out, err := c.RunInstances(context.Background(), &ec2sdk.RunInstancesInput{ImageId: aws.String("ami-1"),
		InstanceType: ec2Type(typ), MinCount: aws.Int32(1), MaxCount: aws.Int32(1), SubnetId: aws.String(subnet)})
	if err != nil {
		t.Fatal(err)
	}
	i := out.Instances[0]
	in := Instance{ID: *i.InstanceId, NetNS: "berth-" + *i.InstanceId, PrimaryIP: *i.PrivateIpAddress,
		PrimaryENI: *i.NetworkInterfaces[0].NetworkInterfaceId, SubnetID: subnet}
	WaitFor(t, "namespace "+in.NetNS, 20*time.Second, func() bool {
		_, err := os.Stat("/var/run/netns/" + in.NetNS)
		return err == nil
	})
	return in
}

// WaitFor polls cond.
func WaitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// InNetNS runs fn on an OS thread inside the named namespace; processes
// fn starts inherit the namespace.
func InNetNS(name string, fn func() error) error { return nsrun.In(name, fn) }

// StartIn starts a command inside a named namespace (via nsenter, which
// leaves /sys alone, unlike `ip netns exec`), stopped when the test ends.
func StartIn(t testing.TB, ns string, env []string, name string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("nsenter", append([]string{"--net=/var/run/netns/" + ns, name}, args...)...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	return cmd
}

// NewNetNS makes a named namespace for a pod, deleted when the test ends.
func NewNetNS(t testing.TB, name string) string {
	t.Helper()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v %s", name, err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	return "/var/run/netns/" + name
}

// DialFrom connects from inside ns to addr and closes.
func DialFrom(ns, addr string, timeout time.Duration) (net.Addr, error) {
	var local net.Addr
	err := InNetNS(ns, func() error {
		c, err := net.DialTimeout("tcp", addr, timeout)
		if err != nil {
			return err
		}
		local = c.LocalAddr()
		return c.Close()
	})
	return local, err
}

// cidrLockDir holds one lock file per /16 in use by a test.
const cidrLockDir = "/run/berth-e2e-cidrs"

// lockCIDR picks and locks a free 10.x.0.0/16 for the test (see OwnSubnet).
func lockCIDR(t testing.TB) int {
	t.Helper()
	if err := os.MkdirAll(cidrLockDir, 0o700); err != nil {
		t.Fatal(err)
	}
	start := rand.IntN(64)
	for i := range 64 {
		x := 128 + (start+i)%64
		if hostRoutes(fmt.Sprintf("10.%d.0.0/16", x)) {
			continue
		}
		f, err := os.OpenFile(filepath.Join(cidrLockDir, fmt.Sprintf("10.%d", x)), os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
			continue
		}
		t.Cleanup(func() { f.Close() })
		return x
	}
	t.Fatal("no free 10.x.0.0/16 in 10.128–10.191 for a test VPC")
	return 0
}

// hostRoutes reports whether the host routes any part of cidr other than
// by its default route (in any table: a test's VPC may be routed anywhere).
func hostRoutes(cidr string) bool {
	want := netip.MustParsePrefix(cidr)
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return true // cannot tell: take another
	}
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		ones, _ := r.Dst.Mask.Size()
		addr, ok := netip.AddrFromSlice(r.Dst.IP.To4())
		if ok && ones > 0 && netip.PrefixFrom(addr, ones).Overlaps(want) {
			return true
		}
	}
	return false
}

func ec2Type(s string) ec2types.InstanceType { return ec2types.InstanceType(s) }

// OwnSubnet makes a VPC with a 10.x.0.0/16 that no other test on this
// machine uses now, so that its host route does not collide with another
// localcloud's VPC, and in it the subnet 10.x.<third>.0/<bits>. It returns
// the subnet's ID and the VPC's CIDR.
//
// x is taken from 128–191, where no test has a fixed VPC CIDR, and held
// for the test by an flock on /run/berth-e2e-cidrs/10.x (released when
// the test ends, or with its process): tests of other packages, running
// at the same time, pick others. A /16 the host already routes (a
// leftover, or something that is not a test) is skipped too.
func OwnSubnet(t testing.TB, c *ec2sdk.Client, third, bits int) (subnetID, vpcCIDR string) {
	t.Helper()
	x := lockCIDR(t)
	ctx := context.Background()
	vpcCIDR = fmt.Sprintf("10.%d.0.0/16", x)
	v, err := c.CreateVpc(ctx, &ec2sdk.CreateVpcInput{CidrBlock: aws.String(vpcCIDR)})
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.CreateSubnet(ctx, &ec2sdk.CreateSubnetInput{VpcId: v.Vpc.VpcId,
		CidrBlock: aws.String(fmt.Sprintf("10.%d.%d.0/%d", x, third, bits)), AvailabilityZone: aws.String("us-west-2a")})
	if err != nil {
		t.Fatal(err)
	}
	return *s.Subnet.SubnetId, vpcCIDR
}
