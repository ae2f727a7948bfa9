package pool

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/berth-io/berth/ipamd/cloud"
)

// imdsLagGrace is how long a new address may be missing from IMDS before
// its absence means anything (the VPC CNI uses a minute too).
const imdsLagGrace = time.Minute

// releaseGrace is how long EC2 and IMDS may still list an address or ENI
// ipamd gave back; reconcile ignores it meanwhile (the VPC CNI's reconcile
// cooldown, also a minute).
const releaseGrace = time.Minute

// noteReleased records addresses or prefixes given back to EC2.
func noteReleased[T fmt.Stringer](p *Pool, cidrs []T) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cidrs {
		p.released[c.String()] = p.now()
	}
}

// recentlyReleased returns a filter for what ipamd gave back less than
// releaseGrace ago, forgetting older entries.
func (p *Pool) recentlyReleased() func(key string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	recent := map[string]bool{}
	for k, at := range p.released {
		if p.now().Sub(at) >= releaseGrace {
			delete(p.released, k)
			continue
		}
		recent[k] = true
	}
	return func(key string) bool { return recent[key] }
}

// withoutReleased drops from an ENI listing what ipamd recently gave back
// and the datastore does not hold (again).
func withoutReleased(e cloud.ENI, recent func(string) bool, known map[netip.Prefix]bool) cloud.ENI {
	e.Secondary = slices.DeleteFunc(slices.Clone(e.Secondary), func(a netip.Addr) bool {
		return recent(a.String()) && !known[netip.PrefixFrom(a, 32)]
	})
	e.Prefixes = slices.DeleteFunc(slices.Clone(e.Prefixes), func(pf netip.Prefix) bool { return recent(pf.String()) && !known[pf] })
	return e
}

// knownCIDRs returns the datastore's CIDRs by ENI, and the CIDRs in the
// pool longer than IMDS can lag.
func (p *Pool) knownCIDRs() (known map[string]map[netip.Prefix]bool, settled map[netip.Prefix]bool) {
	known, settled = map[string]map[netip.Prefix]bool{}, map[netip.Prefix]bool{}
	for _, e := range p.ds.ENIs() {
		known[e.ID] = map[netip.Prefix]bool{}
		for _, c := range p.ds.CIDRs(e.ID) {
			known[e.ID][c.Prefix] = true
			if p.now().Sub(c.Added) > imdsLagGrace {
				settled[c.Prefix] = true
			}
		}
	}
	return known, settled
}

// addedWithin reports whether ipamd added (or adopted) the ENI less than
// d ago.
func (p *Pool) addedWithin(eni string, d time.Duration) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	at, ok := p.enis[eni]
	return ok && p.now().Sub(at) < d
}

// imdsDiffers compares IMDS's ENIs with the datastore. IMDS lags EC2, so
// a difference only means EC2 should be asked.
func (p *Pool) imdsDiffers(md []cloud.ENI) bool {
	known, settled := p.knownCIDRs()
	inMD := map[netip.Prefix]bool{}
	for _, e := range md {
		for _, ip := range e.Secondary {
			inMD[netip.PrefixFrom(ip, 32)] = true
		}
		for _, pf := range e.Prefixes {
			inMD[pf] = true
		}
	}
	recent := p.recentlyReleased()
	p.mu.Lock()
	md = slices.DeleteFunc(slices.Clone(md), func(e cloud.ENI) bool {
		_, other := p.unmanaged[e.ID]
		return other || e.Card != p.card || recent(e.ID)
	})
	p.mu.Unlock()
	for i := range md {
		md[i] = withoutReleased(md[i], recent, known[md[i].ID])
	}
	for c := range settled {
		if !inMD[c] {
			return true // IMDS lost a settled address
		}
	}
	for _, e := range md {
		have, ok := known[e.ID]
		if !ok {
			return true
		}
		for _, ip := range e.Secondary {
			if !have[netip.PrefixFrom(ip, 32)] {
				return true
			}
		}
		for _, pf := range e.Prefixes {
			if !have[pf] {
				return true
			}
		}
	}
	return len(md) != len(known)
}

// ReconcileLoop compares the datastore with the node's ENIs every period.
// IMDS is read first because it is free; it lags EC2 by seconds, so it is
// only a hint: an ENI or address that IMDS shows and the datastore lacks
// (an ENI created before a crash, an address assigned by hand) is looked
// up in EC2 and adopted, and an address the datastore has but EC2 no
// longer does is dropped only when EC2 itself says so and no pod holds it.
// Nothing is ever removed on IMDS's word.
func (p *Pool) ReconcileLoop(ctx context.Context, period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-p.reconcileNow:
		}
		if err := p.ReconcileOnce(ctx); err != nil {
			p.log.Warn("reconcile with EC2", "err", err)
		}
	}
}

// listTries bounds the EC2 listings reconcile throws away because a grow
// or shrink ran beside them; the last one is taken under the EC2 lock.
const listTries = 3

// listForReconcile lists the node's ENIs in EC2 and returns holding the
// EC2 lock, with a listing no grow or shrink ran beside: what they change
// during a listing is missing from it (shrink's given-back addresses would
// be re-adopted, grow's new ones dropped). The listing is taken without
// the lock, so that grow, shrink and the ADDs waiting for them do not wait
// for EC2's answer (seconds when EC2 throttles); one that a grow or shrink
// ran beside is thrown away and taken again.
func (p *Pool) listForReconcile(ctx context.Context) ([]cloud.ENI, error) {
	for try := 1; ; try++ {
		locked := try == listTries
		if locked {
			if err := p.lockEC2(ctx); err != nil {
				return nil, err
			}
		}
		gen := p.ec2Gen.Load()
		enis, err := p.listENIs(ctx)
		if err != nil {
			if locked {
				p.unlockEC2()
			}
			return nil, fmt.Errorf("list the node's ENIs: %w", err)
		}
		if locked {
			return enis, nil
		}
		if err := p.lockEC2(ctx); err != nil {
			return nil, err
		}
		if p.ec2Gen.Load() == gen {
			return enis, nil
		}
		p.unlockEC2()
		p.log.Debug("EC2 listing older than a grow or shrink: listing again", "try", try)
	}
}

// ReconcileOnce runs one comparison.
func (p *Pool) ReconcileOnce(ctx context.Context) error {
	md, err := p.cloud.MetadataENIs(ctx)
	if err != nil {
		return fmt.Errorf("read the node's ENIs from IMDS: %w", err)
	}
	if !p.imdsDiffers(md) {
		return nil
	}
	// IMDS and the datastore disagree: ask EC2, the source of truth.
	enis, err := p.listForReconcile(ctx)
	if err != nil {
		return err
	}
	defer p.unlockEC2()
	// Taken after the listing: under the EC2 lock nothing is given back
	// while it is in flight, but what the last grow or shrink did before it
	// must be what the listing is compared with.
	known, settled := p.knownCIDRs()
	recent := p.recentlyReleased()
	inEC2 := map[string]map[netip.Prefix]bool{}
	// An ENI that became unmanaged (tagged no_manage later) counts as gone:
	// its free addresses leave the pool, the ENI itself stays attached.
	for _, e := range p.sortENIs(enis) {
		if !e.Attached || recent(e.ID) {
			continue
		}
		e = withoutReleased(e, recent, known[e.ID])
		inEC2[e.ID] = map[netip.Prefix]bool{}
		for _, ip := range e.Secondary {
			inEC2[e.ID][netip.PrefixFrom(ip, 32)] = true
		}
		for _, pf := range e.Prefixes {
			inEC2[e.ID][pf] = true
		}
		have, knownENI := known[e.ID]
		if !knownENI {
			p.log.Info("adopting an ENI the datastore did not know", "eni", e.ID, "device", e.Device)
		}
		if err := p.adopt(ctx, e); err != nil {
			return err
		}
		if !knownENI {
			p.countReconcile("eniReconcileAdd", 1)
		}
		added := 0
		for c := range inEC2[e.ID] {
			if !have[c] {
				added++
			}
		}
		p.countReconcile("eniDataStorePoolReconcileAdd", added)
	}
	for eni, cidrs := range known {
		ec2CIDRs, attached := inEC2[eni]
		for c := range cidrs {
			// What ipamd added within the minute may be missing from a
			// listing that lags (EC2 is eventually consistent): not gone.
			if attached && ec2CIDRs[c] || !settled[c] {
				continue
			}
			// Gone from EC2: drop it, cooling or not, unless a pod holds it.
			if err := p.ds.DropCIDR(eni, c); err == nil {
				p.log.Info("dropped an address EC2 no longer has", "eni", eni, "cidr", c)
				p.countReconcile("eniIPPoolReconcileDel", 1)
			}
		}
		if !attached && !p.addedWithin(eni, imdsLagGrace) {
			if err := p.ds.RemoveENI(eni); err == nil {
				p.log.Info("dropped an ENI EC2 no longer attaches", "eni", eni)
				p.countReconcile("eniReconcileDel", 1)
			}
		}
	}
	return nil
}
