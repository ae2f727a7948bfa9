package ec2

import (
	"context"
	"net/netip"
	"time"
)

// settle completes every asynchronous transition that is due at now:
// instances pending → running and shutting-down → terminated, ENI
// attachments attaching → attached and detaching → detached, and the EBS
// transitions. Hooks tell the datapath. It runs under s.mu.
func (s *Service) settle(ctx context.Context, now time.Time) {
	for _, inst := range s.st.Instances {
		if inst.StateChangeAt.IsZero() || now.Before(inst.StateChangeAt) {
			continue
		}
		switch inst.State {
		case "pending":
			inst.State = "running"
			if err := s.hooks.InstanceRunning(ctx, inst, s.st.ENIs[inst.PrimaryENI]); err != nil {
				s.log.Error("datapath: start instance", "instance", inst.ID, "err", err)
			}
		case "shutting-down":
			inst.State = "terminated"
		}
		inst.StateChangeAt = time.Time{}
		s.markDirty()
	}
	for _, e := range s.st.ENIs {
		a := e.Attachment
		if a == nil || a.Status == "attached" || now.Before(a.ReadyAt) {
			continue
		}
		switch a.Status {
		case "attaching":
			a.Status = "attached"
			if inst := s.st.Instances[a.InstanceID]; inst != nil {
				if err := s.hooks.ENIAttached(ctx, inst, e); err != nil {
					s.log.Error("datapath: attach eni", "eni", e.ID, "err", err)
				}
			}
		case "detaching":
			e.Attachment = nil
			if err := s.hooks.ENIDetached(ctx, a.InstanceID, e); err != nil {
				s.log.Error("datapath: detach eni", "eni", e.ID, "err", err)
			}
		}
		s.markDirty()
	}
	s.settleEBS(ctx, now)
}

// Run settles due transitions in the background so that they happen on
// time even when nobody calls the API (the datapath follows them).
func (s *Service) Run(ctx context.Context) {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.mu.Lock()
			s.settle(ctx, s.cfg.Now())
			if err := s.persistLocked(); err != nil {
				s.log.Error("persist ec2 state", "err", err)
			}
			s.mu.Unlock()
		}
	}
}

// createDefaultVPC gives a fresh account what AWS gives it: a default VPC
// 172.31.0.0/16 with a /20 default subnet in each zone and a default group.
func (s *Service) createDefaultVPC() {
	v := &VPC{ID: newID("vpc"), CIDR: "172.31.0.0/16", IsDefault: true, Tags: Tags{}}
	s.st.VPCs[v.ID] = v
	sg := &SecurityGroup{ID: newID("sg"), Name: "default", Description: "default VPC security group", VPCID: v.ID, Tags: Tags{}}
	s.st.SecurityGroups[sg.ID] = sg
	base := netip.MustParseAddr("172.31.0.0").As4()
	for i, az := range s.cfg.AZs {
		b := base
		b[2] = byte(16 * i)
		sub := &Subnet{ID: newID("subnet"), VPCID: v.ID, CIDR: netip.PrefixFrom(netip.AddrFrom4(b), 20).String(), AZ: az, Tags: Tags{}, Used: map[string]string{}}
		s.st.Subnets[sub.ID] = sub
	}
}
