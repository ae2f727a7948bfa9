package datapath_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/vishvananda/netlink"

	"github.com/berth-io/berth/test/e2e"
)

// TestEgressNAT: what an instance sends beyond the host leaves with the
// host's address (the VPC's NAT gateway), as the network past the host
// cannot route back to VPC addresses; what it sends to the host keeps its
// own address. The table goes with the VPC's router.
func TestEgressNAT(t *testing.T) {
	state, reg := t.TempDir(), t.TempDir()
	c := startCloud(t, state, reg)
	vpcCIDR := e2e.LockCIDR(t)
	vpc, sub := c.vpc(t, vpcCIDR, strings.Replace(vpcCIDR, "/16", "/20", 1))
	inst := c.run(t, sub, 1, types.InstanceTypeT3Micro)[0]
	table := "berth_nat_" + strings.TrimPrefix(vpc, "vpc-")[:min(12, len(vpc)-4)]

	// "The internet": a namespace past a link of the host's own.
	hostEnd, outside := outsideNet(t)
	serveRemoteAddr(t, "berth-outside-"+hostEnd, outside+":7070")
	// A listener on the host itself, on the same link's address.
	hostIP := strings.TrimSuffix(outside, "2") + "1"
	serveRemoteAddrHere(t, hostIP+":7071")

	ns := "berth-" + inst.id
	var got string
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if got, err = askRemoteAddr(t, ns, outside+":7070"); err == nil {
			break
		}
	}
	if err != nil || got != hostIP {
		out, _ := exec.Command("nft", "list", "table", "ip", table).CombinedOutput()
		t.Fatalf("outside saw %q (%v), want the host's %s (masqueraded)\n%s", got, err, hostIP, out)
	}
	if got, err := askRemoteAddr(t, ns, hostIP+":7071"); err != nil || got != inst.ip {
		t.Fatalf("the host saw %q (%v), want the instance's own %s", got, err, inst.ip)
	}
	out, err := exec.Command("nft", "list", "table", "ip", table).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "masquerade") || !strings.Contains(string(out), vpc) {
		t.Fatalf("nft table %s: %v\n%s", table, err, out)
	}
	c.stop()
	if out, err := exec.Command("nft", "list", "table", "ip", table).CombinedOutput(); err == nil {
		t.Fatalf("nft table %s outlived localcloud:\n%s", table, out)
	}
}

// outsideNet makes a namespace linked to the host by a veth (host end
// hostEnd, 198.18.x.1/30; namespace end 198.18.x.2 with the host as its
// default route) and returns the host end's name and the far address.
func outsideNet(t *testing.T) (string, string) {
	t.Helper()
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	x := -1
	for try := 0; x < 0 && try < 100; try++ {
		x = rand.IntN(256)
		far := net.ParseIP(fmt.Sprintf("198.18.%d.2", x))
		for _, r := range routes {
			if ones, _ := r.Dst.Mask.Size(); r.Dst != nil && ones > 0 && r.Dst.Contains(far) {
				x = -1 // another test's
				break
			}
		}
	}
	if x < 0 {
		t.Fatal("no free /30 in 198.18.0.0/16")
	}
	link := fmt.Sprintf("bo%d%d", x, rand.IntN(1000))
	ns := "berth-outside-" + link
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	run("ip", "netns", "add", ns)
	t.Cleanup(func() {
		_ = exec.Command("ip", "link", "del", link).Run()
		_ = exec.Command("ip", "netns", "del", ns).Run()
	})
	run("ip", "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", ns)
	run("ip", "addr", "add", fmt.Sprintf("198.18.%d.1/30", x), "dev", link)
	run("ip", "link", "set", link, "up")
	run("nsenter", "--net=/var/run/netns/"+ns, "ip", "addr", "add", fmt.Sprintf("198.18.%d.2/30", x), "dev", "eth0")
	run("nsenter", "--net=/var/run/netns/"+ns, "ip", "link", "set", "eth0", "up")
	run("nsenter", "--net=/var/run/netns/"+ns, "ip", "route", "add", "default", "via", fmt.Sprintf("198.18.%d.1", x))
	return link, fmt.Sprintf("198.18.%d.2", x)
}

// serveRemoteAddr answers each connection in ns with the address it came from.
func serveRemoteAddr(t *testing.T, ns, addr string) {
	t.Helper()
	var ln net.Listener
	if err := inNS(t, ns, func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	answerRemoteAddr(t, ln)
}

func serveRemoteAddrHere(t *testing.T, addr string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	answerRemoteAddr(t, ln)
}

func answerRemoteAddr(t *testing.T, ln net.Listener) {
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			_, _ = c.Write([]byte(host + "\n"))
			c.Close()
		}
	}()
}

// askRemoteAddr connects from ns to addr and returns what it answers.
func askRemoteAddr(t *testing.T, ns, addr string) (string, error) {
	var got string
	err := inNS(t, ns, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(time.Second))
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		got = strings.TrimSpace(string(buf[:n]))
		return err
	})
	return got, err
}
