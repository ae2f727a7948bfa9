package datapath_test

import (
	"context"
	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

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
	table := "berth_nat_" + strings.TrimPrefix(vpc, "vpc-")[:12]

	out := e2e.NewOutside(t)
	e2e.ServeRemoteAddr(t, out.NS, out.FarIP+":7070")
	// A listener on the host itself, on its end of that link.
	e2e.ServeRemoteAddr(t, "", out.HostIP+":7071")

	ns := "berth-" + inst.id
	var got string
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if got, err = askRemoteAddr(t, ns, out.FarIP+":7070"); err == nil {
			break
		}
	}
	if err != nil || got != out.HostIP {
		rules, _ := exec.Command("nft", "list", "table", "ip", table).CombinedOutput()
		t.Fatalf("outside saw %q (%v), want the host's %s (masqueraded)\n%s", got, err, out.HostIP, rules)
	}
	if got, err := askRemoteAddr(t, ns, out.HostIP+":7071"); err != nil || got != inst.ip {
		t.Fatalf("the host saw %q (%v), want the instance's own %s", got, err, inst.ip)
	}
	rules, err := exec.Command("nft", "list", "table", "ip", table).CombinedOutput()
	if err != nil || !strings.Contains(string(rules), "masquerade") || !strings.Contains(string(rules), vpc) {
		t.Fatalf("nft table %s: %v\n%s", table, err, rules)
	}
	c.stop()
	if rules, err := exec.Command("nft", "list", "table", "ip", table).CombinedOutput(); err == nil {
		t.Fatalf("nft table %s outlived localcloud:\n%s", table, rules)
	}
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

// TestJumboFrames: instances whose interfaces run at the VPC's 9001-byte
// MTU (as ipamd sets them) exchange full-size frames through the router,
// and path MTU discovery shrinks them towards the host (1500 bytes past
// the VPC). A router end left at 1500 dropped every big frame silently:
// connections opened and then hung.
func TestJumboFrames(t *testing.T) {
	state, reg := t.TempDir(), t.TempDir()
	c := startCloud(t, state, reg)
	vpcCIDR := e2e.LockCIDR(t)
	_, sub := c.vpc(t, vpcCIDR, strings.Replace(vpcCIDR, "/16", "/20", 1))
	nodes := c.run(t, sub, 2, types.InstanceTypeM5Large)
	a, b := nodes[0], nodes[1]
	for _, n := range nodes {
		if out := sh(t, "berth-"+n.id, "ip", "-o", "link", "show", "eth0"); !strings.Contains(out, "mtu 9001") {
			t.Fatalf("%s eth0: %s", n.id, out)
		}
	}
	serveEcho(t, "berth-"+b.id, ":7001")
	ln, err := net.Listen("tcp", e2e.HostAddress(t)+":0")
	if err != nil {
		t.Fatal(err)
	}
	echoOn(t, ln)
	big := strings.Repeat("0123456789abcdef", 64<<10/16) // 64 KiB
	for _, dst := range []string{b.ip + ":7001", ln.Addr().String()} {
		var got []byte
		err := inNS(t, "berth-"+a.id, func() error {
			c, err := net.DialTimeout("tcp", dst, 2*time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			go func() { _, _ = c.Write([]byte(big)) }()
			got = make([]byte, len(big))
			_, err = io.ReadFull(c, got)
			return err
		})
		if err != nil || string(got) != big {
			t.Fatalf("64 KiB echoed from %s through the VPC router: %v", dst, err)
		}
	}
}
