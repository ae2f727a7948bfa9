package pool

import (
	"context"
	"net/netip"
	"slices"
	"time"

	"github.com/berth-io/berth/ipamd/cloud"
)

// imdsLagGrace is how long a new address may be missing from IMDS before
// its absence means anything (the VPC CNI uses a minute too).
const imdsLagGrace = time.Minute

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
		}
		if err := p.ReconcileOnce(ctx); err != nil {
			p.log.Warn("reconcile with EC2", "err", err)
		}
	}
}

// ReconcileOnce runs one comparison.
func (p *Pool) ReconcileOnce(ctx context.Context) error {
	md, err := p.cloud.MetadataENIs(ctx)
	if err != nil {
		return err
	}
	known := map[string]map[netip.Prefix]bool{}
	settled := map[netip.Prefix]bool{} // in the pool longer than IMDS can lag
	for _, e := range p.ds.ENIs() {
		known[e.ID] = map[netip.Prefix]bool{}
		for _, c := range p.ds.CIDRs(e.ID) {
			known[e.ID][c.Prefix] = true
			if p.now().Sub(c.Added) > imdsLagGrace {
				settled[c.Prefix] = true
			}
		}
	}
	inMD := map[netip.Prefix]bool{}
	for _, e := range md {
		for _, ip := range e.Secondary {
			inMD[netip.PrefixFrom(ip, 32)] = true
		}
		for _, pf := range e.Prefixes {
			inMD[pf] = true
		}
	}
	p.mu.Lock()
	md = slices.DeleteFunc(md, func(e cloud.ENI) bool { _, other := p.unmanaged[e.ID]; return other })
	p.mu.Unlock()
	differs := false
	for c := range settled {
		differs = differs || !inMD[c] // IMDS lost a settled address: ask EC2
	}
	for _, e := range md {
		have, ok := known[e.ID]
		if !ok {
			differs = true
			break
		}
		for _, ip := range e.Secondary {
			differs = differs || !have[netip.PrefixFrom(ip, 32)]
		}
		for _, pf := range e.Prefixes {
			differs = differs || !have[pf]
		}
	}
	if !differs && len(md) == len(known) {
		return nil
	}
	// IMDS and the datastore disagree: ask EC2, the source of truth.
	enis, err := p.cloud.AttachedENIs(ctx)
	if err != nil {
		return err
	}
	inEC2 := map[string]map[netip.Prefix]bool{}
	// An ENI that became unmanaged (tagged no_manage later) counts as gone:
	// its free addresses leave the pool, the ENI itself stays attached.
	for _, e := range p.sortENIs(enis) {
		if !e.Attached {
			continue
		}
		inEC2[e.ID] = map[netip.Prefix]bool{}
		for _, ip := range e.Secondary {
			inEC2[e.ID][netip.PrefixFrom(ip, 32)] = true
		}
		for _, pf := range e.Prefixes {
			inEC2[e.ID][pf] = true
		}
		if _, ok := known[e.ID]; !ok {
			p.log.Info("adopting an ENI the datastore did not know", "eni", e.ID, "device", e.Device)
		}
		if err := p.adopt(ctx, e); err != nil {
			return err
		}
	}
	for eni, cidrs := range known {
		ec2CIDRs, attached := inEC2[eni]
		for c := range cidrs {
			if attached && ec2CIDRs[c] {
				continue
			}
			// Gone from EC2: drop it if no pod holds it (RemoveCIDR refuses otherwise).
			if err := p.ds.RemoveCIDR(eni, c); err == nil {
				p.log.Info("dropped an address EC2 no longer has", "eni", eni, "cidr", c)
			}
		}
		if !attached {
			if err := p.ds.RemoveENI(eni); err == nil {
				p.log.Info("dropped an ENI EC2 no longer attaches", "eni", eni)
			}
		}
	}
	return nil
}
