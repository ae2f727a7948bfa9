package e2e

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os/exec"
	"testing"

	"github.com/vishvananda/netlink"
)

// Outside is a network past the host: a namespace linked to the host by a
// veth, with the host as its default route. What reaches it from a VPC
// has passed the host's forwarding, as traffic to the internet does.
type Outside struct {
	NS     string // the namespace, under /var/run/netns
	HostIP string // the host's end, 198.18.x.1
	FarIP  string // the namespace's end, 198.18.x.2
}

// NewOutside makes an Outside on a /30 of 198.18.0.0/16 no route of the
// host covers; it is removed when the test ends.
func NewOutside(t testing.TB) *Outside {
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
	link := fmt.Sprintf("bo%d-%d", x, rand.IntN(100000))
	o := &Outside{NS: "berth-outside-" + link, HostIP: fmt.Sprintf("198.18.%d.1", x), FarIP: fmt.Sprintf("198.18.%d.2", x)}
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	in := []string{"nsenter", "--net=/var/run/netns/" + o.NS, "ip"}
	run("ip", "netns", "add", o.NS)
	t.Cleanup(func() {
		_ = exec.Command("ip", "link", "del", link).Run()
		_ = exec.Command("ip", "netns", "del", o.NS).Run()
	})
	run("ip", "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", o.NS)
	run("ip", "addr", "add", o.HostIP+"/30", "dev", link)
	run("ip", "link", "set", link, "up")
	run(append(in, "addr", "add", o.FarIP+"/30", "dev", "eth0")...)
	run(append(in, "link", "set", "eth0", "up")...)
	run(append(in, "route", "add", "default", "via", o.HostIP)...)
	return o
}

// ServeRemoteAddr listens on addr in namespace ns ("" for the host's) and
// answers each connection with the address it came from.
func ServeRemoteAddr(t testing.TB, ns, addr string) {
	t.Helper()
	var ln net.Listener
	listen := func() (err error) { ln, err = net.Listen("tcp", addr); return err }
	var err error
	if ns == "" {
		err = listen()
	} else {
		err = InNetNS(ns, listen)
	}
	if err != nil {
		t.Fatal(err)
	}
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
