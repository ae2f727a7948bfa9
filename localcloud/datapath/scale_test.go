package datapath_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2sdk "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/berth-io/berth/localcloud/datapath"
)

// BenchmarkScale20x50 brings up the scale — 20 instances with 50
// IPv4 addresses each — through the EC2 API and measures until every
// namespace exists and every address routes, against a floor measured in
// the same run: the bare netlink work of 20 namespaces, 20 veth pairs and
// 1,000 routes with no API, state or nftables around it.
func BenchmarkScale20x50(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	const instances, ips = 20, 50
	for i := 0; i < b.N; i++ {
		floor := measureFloor(b, instances, ips)

		state, reg := b.TempDir(), b.TempDir()
		slabBefore := meminfo("Slab:")
		c := startCloudB(b, state, reg)
		ctx := context.Background()
		start := time.Now()
		v, err := c.c.CreateVpc(ctx, &ec2sdk.CreateVpcInput{CidrBlock: aws.String("10.88.0.0/16")})
		if err != nil {
			b.Fatal(err)
		}
		s, err := c.c.CreateSubnet(ctx, &ec2sdk.CreateSubnetInput{VpcId: v.Vpc.VpcId, CidrBlock: aws.String("10.88.0.0/20"), AvailabilityZone: aws.String("us-west-2a")})
		if err != nil {
			b.Fatal(err)
		}
		run, err := c.c.RunInstances(ctx, &ec2sdk.RunInstancesInput{ImageId: aws.String("ami-1"), InstanceType: types.InstanceTypeC5n18xlarge,
			MinCount: aws.Int32(instances), MaxCount: aws.Int32(instances), SubnetId: s.Subnet.SubnetId})
		if err != nil {
			b.Fatal(err)
		}
		for _, inst := range run.Instances {
			if _, err := c.c.AssignPrivateIpAddresses(ctx, &ec2sdk.AssignPrivateIpAddressesInput{NetworkInterfaceId: inst.NetworkInterfaces[0].NetworkInterfaceId,
				SecondaryPrivateIpAddressCount: aws.Int32(ips - 1)}); err != nil {
				b.Fatal(err)
			}
		}
		router := datapath.Namespace(*v.Vpc.VpcId)
		deadline := time.Now().Add(60 * time.Second)
		for routesIn(router) < instances*ips {
			if time.Now().After(deadline) {
				b.Fatalf("only %d of %d routes after 60 s", routesIn(router), instances*ips)
			}
			time.Sleep(5 * time.Millisecond)
		}
		setup := time.Since(start)
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		slab := meminfo("Slab:") - slabBefore
		c.stop()
		b.ReportMetric(setup.Seconds(), "s/setup")
		b.ReportMetric(floor.Seconds(), "s/floor")
		b.ReportMetric(setup.Seconds()/floor.Seconds(), "x-floor")
		b.ReportMetric(float64(slab)/(1<<20), "MiB-kernel-slab")
		b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "MiB-heap")
	}
}

func startCloudB(b *testing.B, state, reg string) *cloud { return startCloud(b, state, reg) }

func routesIn(ns string) int {
	h, err := netns.GetFromName(ns)
	if err != nil {
		return 0
	}
	defer h.Close()
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		return 0
	}
	defer nh.Close()
	rs, err := nh.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return 0
	}
	n := 0
	for _, r := range rs {
		if r.Dst != nil && r.Dst.IP.To4() != nil && r.Dst.IP.To4()[0] == 10 && r.Type != 6 /* blackhole */ {
			n++
		}
	}
	return n
}

func meminfo(field string) int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == field {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// measureFloor does the raw kernel work of the scale setup and undoes it.
func measureFloor(b *testing.B, instances, ips int) time.Duration {
	start := time.Now()
	router := fmt.Sprintf("bfloor-r-%d", os.Getpid())
	rh := mustNS(b, router)
	defer func() { _ = netns.DeleteNamed(router) }()
	rnl, err := netlink.NewHandleAt(rh)
	if err != nil {
		b.Fatal(err)
	}
	defer rnl.Close()
	for i := 0; i < instances; i++ {
		name := fmt.Sprintf("bfloor-i-%d-%d", os.Getpid(), i)
		ih := mustNS(b, name)
		defer func() { _ = netns.DeleteNamed(name) }()
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: fmt.Sprintf("rf%d", i)}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(ih))}
		if err := rnl.LinkAdd(veth); err != nil {
			b.Fatal(err)
		}
		l, _ := rnl.LinkByName(veth.Name)
		_ = rnl.LinkSetUp(l)
		for j := 0; j < ips; j++ {
			ip := net.IPv4(10, 99, byte(i), byte(j+1))
			if err := rnl.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: &net.IPNet{IP: ip, Mask: net.CIDRMask(32, 32)}, Scope: netlink.SCOPE_LINK}); err != nil {
				b.Fatal(err)
			}
		}
		ih.Close()
	}
	rh.Close()
	return time.Since(start)
}

func mustNS(b *testing.B, name string) netns.NsHandle {
	var h netns.NsHandle
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, _ := netns.Get()
		var err error
		h, err = netns.NewNamed(name)
		if err == nil {
			err = netns.Set(orig)
		}
		if err == nil {
			runtime.UnlockOSThread()
		}
		done <- err
	}()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	return h
}
