package datapath

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf/ringbuf"
)

// Dir is the direction of traffic relative to the pod.
type Dir uint8

const (
	Ingress Dir = dirIngress // to the pod
	Egress  Dir = dirEgress  // from the pod
)

func (d Dir) String() string {
	if d == Egress {
		return "egress"
	}
	return "ingress"
}

// Verdict is one logged decision on a packet that conntrack did not
// already allow: the first packet of a flow, a re-evaluation after a
// policy change, or a denied packet.
type Verdict struct {
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16 // ICMP echo: the identifier in both
	Protocol         uint8
	Dir              Dir
	Allowed          bool
	Ifindex          int    // host veth of the pod
	RuleID           uint32 // Rule.ID that allowed it; 0 for a default allow or a deny
}

// Counts is a packet and byte count.
type Counts struct {
	Packets, Bytes uint64
}

// Counters are totals since the maps were created (they survive agent
// restarts), summed over CPUs.
type Counters struct {
	IngressAllowed, IngressDenied Counts
	EgressAllowed, EgressDenied   Counts
}

// SetVerdictLog turns the verdict ring buffer on or off; when on, at most
// perSecond events per second are written (the limit is applied in BPF,
// so a flood costs no more than that).
func (d *Datapath) SetVerdictLog(on bool, perSecond int) error {
	if on && perSecond <= 0 {
		return fmt.Errorf("verdict log rate %d: must be positive", perSecond)
	}
	s := netpolSettings{LogPerSecond: uint32(min(perSecond, 1<<30))}
	if on {
		s.LogEnabled = 1
	}
	if err := d.objs.Config.Put(uint32(0), s); err != nil {
		return fmt.Errorf("set verdict log: %w", err)
	}
	return nil
}

// ReadVerdicts calls fn for each verdict event until ctx is done, then
// returns ctx's error. Only one reader should run at a time.
func (d *Datapath) ReadVerdicts(ctx context.Context, fn func(Verdict)) error {
	r, err := ringbuf.NewReader(d.objs.Verdicts)
	if err != nil {
		return fmt.Errorf("open verdict ring buffer: %w", err)
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
		case <-done:
		}
		_ = r.Close()
	}()
	var rec ringbuf.Record
	for {
		if err := r.ReadInto(&rec); err != nil {
			if errors.Is(err, ringbuf.ErrClosed) && ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("read verdict ring buffer: %w", err)
		}
		var e netpolEvent
		if _, err := binary.Decode(rec.RawSample, nativeEndian, &e); err != nil {
			return fmt.Errorf("decode verdict: %w", err)
		}
		fn(Verdict{
			Src:      keyAddr(e.Saddr),
			Dst:      keyAddr(e.Daddr),
			SrcPort:  keyPort(e.Sport),
			DstPort:  keyPort(e.Dport),
			Protocol: e.Proto,
			Dir:      Dir(e.Dir),
			Allowed:  e.Verdict == 0,
			Ifindex:  int(e.Ifindex),
			RuleID:   e.RuleId,
		})
	}
}

// Counters sums the per-CPU verdict counters.
func (d *Datapath) Counters() (Counters, error) {
	var c Counters
	out := [4]*Counts{&c.IngressAllowed, &c.IngressDenied, &c.EgressAllowed, &c.EgressDenied}
	for i, dst := range out {
		var perCPU []netpolCounter
		if err := d.objs.Counters.Lookup(uint32(i), &perCPU); err != nil {
			return Counters{}, fmt.Errorf("read counters: %w", err)
		}
		for _, v := range perCPU {
			dst.Packets += v.Packets
			dst.Bytes += v.Bytes
		}
	}
	return c, nil
}
