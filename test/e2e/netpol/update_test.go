package netpol_test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/berth-io/berth/test/e2e"
)

// TestUpdatesDropNothing makes 10,000 updates to policies that select a
// server pod while established UDP and TCP flows, which every version of
// the policies allows, carry traffic to it: not one request may be lost.
// Swapping a pod's rule set is atomic, so no packet sees a half-written one.
func TestUpdatesDropNothing(t *testing.T) {
	const updates, writers, flows = 10000, 4, 4
	h := newHarness(t, "standard", "m5.large")
	h.addNamespacesNamed("x", "y")
	client := h.addPod("x", "a", nil)
	server := h.addPod("y", "a", nil)
	from := peers(bothPeer(sel("ns", "x"), sel("pod", "a")))
	h.apply(policy("y", "base", podA(), ingressOnly, ingressRules(in(from, portNum(corev1.ProtocolTCP, 80), portNum(corev1.ProtocolUDP, 80))), nil))
	h.apply(policy("x", "egress", podA(), egressOnly, nil, egressRules(out(nil))))
	for w := range writers {
		h.apply(policy("y", fmt.Sprintf("churn-%d", w), podA(), ingressOnly, ingressRules(in(from, portNum(corev1.ProtocolTCP, 1000))), nil))
	}
	e2e.WaitFor(t, "x/a reaches y/a", 20*time.Second, func() bool { return h.probe(client, server, corev1.ProtocolUDP, 80) })
	before := h.programmed()

	var sent, lost, tcpErrs atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range flows {
		udp, tcp := dialFrom(t, client.cni.NetNS, server)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer udp.Close()
			defer tcp.Close()
			buf := make([]byte, 64)
			for seq := 0; ; seq++ {
				select {
				case <-stop:
					return
				default:
				}
				msg := fmt.Sprintf("req %d", seq)
				sent.Add(1)
				_ = udp.SetDeadline(time.Now().Add(time.Second))
				if _, err := udp.Write([]byte(msg)); err != nil {
					lost.Add(1)
					continue
				}
				if n, err := udp.Read(buf); err != nil || string(buf[:n]) != msg {
					lost.Add(1)
				}
				_ = tcp.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := tcp.Write([]byte(msg)); err != nil {
					tcpErrs.Add(1)
					return
				}
				if n, err := tcp.Read(buf[:len(msg)]); err != nil || string(buf[:n]) != msg {
					tcpErrs.Add(1)
					return
				}
				// About 1,000 requests a second per flow: steady traffic that
				// leaves the CPUs to the API server and the agent.
				time.Sleep(time.Millisecond)
			}
		}()
	}

	// The writers move each churn policy's port on every update.
	ctx := context.Background()
	var done atomic.Int64
	var werr error
	var once sync.Once
	var ww sync.WaitGroup
	start := time.Now()
	for w := range writers {
		ww.Add(1)
		go func() {
			defer ww.Done()
			for i := range updates / writers {
				patch := fmt.Sprintf(`{"spec":{"ingress":[{"from":[{"namespaceSelector":{"matchLabels":{"ns":"x"}},"podSelector":{"matchLabels":{"pod":"a"}}}],"ports":[{"protocol":"TCP","port":%d}]}]}}`, 1000+i%5000)
				_, err := h.kube.NetworkingV1().NetworkPolicies("y").Patch(ctx, fmt.Sprintf("churn-%d", w), types.MergePatchType, []byte(patch), metav1.PatchOptions{})
				if err != nil {
					once.Do(func() { werr = err })
					return
				}
				done.Add(1)
			}
		}()
	}
	ww.Wait()
	elapsed := time.Since(start)
	// Let the last updates reach the datapath while traffic still flows.
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	if werr != nil {
		t.Fatalf("policy update failed after %d: %v", done.Load(), werr)
	}
	after := h.programmed()
	t.Logf("%d policy updates in %s; the agent programmed %d PolicyEndpoint changes; %d UDP requests, %d lost, %d TCP errors",
		done.Load(), elapsed.Round(time.Millisecond), after-before, sent.Load(), lost.Load(), tcpErrs.Load())
	if done.Load() != updates {
		t.Fatalf("made %d updates, want %d", done.Load(), updates)
	}
	if after-before < 100 {
		t.Fatalf("the agent programmed only %d changes: the updates did not reach the datapath", after-before)
	}
	if lost.Load() != 0 || tcpErrs.Load() != 0 {
		t.Fatalf("flows the policies always allow lost %d of %d UDP requests and had %d TCP errors during updates", lost.Load(), sent.Load(), tcpErrs.Load())
	}
}

// dialFrom opens a UDP and a TCP connection from inside a pod to a server's port 80.
func dialFrom(t testing.TB, netns string, server *hpod) (net.Conn, net.Conn) {
	t.Helper()
	var udp, tcp net.Conn
	err := e2e.InNetNS(netns, func() error {
		var err error
		if udp, err = net.Dial("udp", net.JoinHostPort(server.ip.String(), "80")); err != nil {
			return err
		}
		tcp, err = net.DialTimeout("tcp", net.JoinHostPort(server.ip.String(), "80"), 2*time.Second)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return udp, tcp
}
