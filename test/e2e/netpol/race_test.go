package netpol_test

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/berth-io/berth/test/e2e"
)

// TestIsolationBeforeFirstPacket creates 200 pods in a namespace whose
// policy denies everything. Each pod starts sending UDP datagrams and TCP
// SYNs to a server before its ADD begins and keeps on until well after ADD
// returned: the server must receive nothing from any of them, while every
// pod must really have sent (the kernel accepted its datagrams) so the
// test cannot pass by sending nothing.
func TestIsolationBeforeFirstPacket(t *testing.T) {
	const pods = 200
	h := newHarness(t, "standard", "m5.4xlarge")
	h.addNamespacesNamed("race", "peer")
	server := h.addPod("peer", "server", nil)
	h.apply(policy("race", "deny-all", nil, both, nil, nil))
	// The policy must be known to the agent before the pods come, as it
	// would be for pods created after a policy: wait for its PolicyEndpoint.
	h.waitPolicyEndpoints("race", "deny-all")

	var sent atomic.Int64
	sentBy := make([]atomic.Int64, pods)
	var wg sync.WaitGroup
	stopAll := make(chan struct{})
	var ips []netip.Addr
	for i := range pods {
		name := fmt.Sprintf("p%03d", i)
		stop := make(chan struct{})
		p := h.addPodAfter("race", name, nil, func(netns string) {
			udp, tcp, err := socketsIn(netns)
			if err != nil {
				t.Fatalf("sockets in %s: %v", netns, err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer syscall.Close(udp)
				blast(udp, tcp, server.ip, stop, stopAll, &sentBy[i])
			}()
		})
		ips = append(ips, p.ip)
		// Keep sending for a while after ADD returned.
		time.AfterFunc(300*time.Millisecond, func() { close(stop) })
	}
	time.Sleep(500 * time.Millisecond)
	close(stopAll)
	wg.Wait()
	for i := range pods {
		n := sentBy[i].Load()
		sent.Add(n)
		if n == 0 {
			t.Errorf("pod %d never managed to send: the test proves nothing for it", i)
		}
	}
	got := 0
	for i, ip := range ips {
		if n := server.received(ip); n > 0 {
			t.Errorf("server received %d connections/datagrams from race/p%03d (%s) before or despite enforcement", n, i, ip)
			got++
		}
	}
	t.Logf("%d pods sent %d datagrams and SYNs the kernel accepted; %d pods got through", pods, sent.Load(), got)
}

// socketsIn opens, inside the pod's namespace, a UDP socket and returns it
// with a function making fresh non-blocking TCP sockets there.
func socketsIn(netns string) (udp int, tcp func() (int, error), err error) {
	var tcpFds []int
	err = e2e.InNetNS(netns, func() error {
		udp, err = syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM|syscall.SOCK_NONBLOCK, 0)
		if err != nil {
			return err
		}
		// A pool of TCP sockets made in the namespace up front: a socket
		// belongs to the namespace it was made in.
		for range 64 {
			fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK, 0)
			if err != nil {
				return err
			}
			tcpFds = append(tcpFds, fd)
		}
		return nil
	})
	next := 0
	tcp = func() (int, error) {
		if next == len(tcpFds) {
			return -1, errors.New("no more sockets")
		}
		next++
		return tcpFds[next-1], nil
	}
	return udp, tcp, err
}

// blast sends to dst:80 every few milliseconds until stop and stopAll.
func blast(udp int, tcp func() (int, error), dst netip.Addr, stop, stopAll <-chan struct{}, sent *atomic.Int64) {
	sa := &syscall.SockaddrInet4{Addr: dst.As4(), Port: 80}
	stopped := false
	for {
		select {
		case <-stop:
			stopped = true
		case <-stopAll:
			return
		default:
		}
		if stopped {
			<-stopAll
			return
		}
		if err := syscall.Sendto(udp, []byte("early"), 0, sa); err == nil {
			sent.Add(1)
		}
		if fd, err := tcp(); err == nil {
			// EINPROGRESS means the SYN left the socket.
			if err := syscall.Connect(fd, sa); errors.Is(err, syscall.EINPROGRESS) {
				sent.Add(1)
			}
			defer syscall.Close(fd)
		}
		time.Sleep(3 * time.Millisecond)
	}
}

// TestStrictMode: in strict mode a pod no policy selects is denied both
// ways; once a policy selects it, NetworkPolicy's own rules decide.
func TestStrictMode(t *testing.T) {
	h := newHarness(t, "strict", "m5.large")
	h.addNamespacesNamed("x", "y")
	xa := h.addPod("x", "a", nil)
	ya := h.addPod("y", "a", nil)
	yb := h.addPod("y", "b", nil)
	reach := func(from, to *hpod) bool { return h.probe(from, to, corev1.ProtocolTCP, 80) }
	if reach(xa, ya) || reach(ya, xa) || reach(ya, yb) {
		t.Fatal("strict mode: unselected new pods can talk")
	}
	// x is open both ways; y/a gets an egress-only policy, so its ingress
	// is not isolated any more; y/b stays unselected and denied.
	h.apply(policy("x", "open", nil, both, ingressRules(in(nil)), egressRules(out(nil))))
	h.apply(policy("y", "egress", podA(), egressOnly, nil, egressRules(out(nil))))
	e2e.WaitFor(t, "x/a and y/a reach each other", 20*time.Second, func() bool { return reach(ya, xa) && reach(xa, ya) })
	if reach(xa, yb) || reach(yb, xa) {
		t.Fatal("strict mode: a pod no policy selects was reachable")
	}
}
