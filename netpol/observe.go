package main

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/berth-io/berth/netpol/agent"
	"github.com/berth-io/berth/netpol/datapath"
)

// verdictCollector reads the datapath's per-CPU counters at scrape time.
type verdictCollector struct {
	dp                                     *datapath.Datapath
	packets, bytes                         *prometheus.Desc
	peerWrites, peerDeletes, swaps, shared *prometheus.Desc
	sets                                   *prometheus.Desc
}

func datapathCollector(dp *datapath.Datapath) prometheus.Collector {
	l := []string{"direction", "verdict"}
	return &verdictCollector{dp: dp,
		packets: prometheus.NewDesc("berth_netpol_packets_total", "Packets judged by the policy programs, by direction (of the pod) and verdict.", l, nil),
		bytes:   prometheus.NewDesc("berth_netpol_bytes_total", "Bytes judged by the policy programs, by direction (of the pod) and verdict.", l, nil),
		peerWrites: prometheus.NewDesc("berth_netpol_peer_set_writes_total",
			"Peer set (LPM) entries written since the agent started.", nil, nil),
		peerDeletes: prometheus.NewDesc("berth_netpol_peer_set_deletes_total",
			"Peer set (LPM) entries deleted since the agent started.", nil, nil),
		swaps: prometheus.NewDesc("berth_netpol_ruleset_swaps_total",
			"Pod rulesets swapped in (each a new policy generation) since the agent started.", nil, nil),
		sets: prometheus.NewDesc("berth_netpol_peer_sets",
			"Peer sets in the maps.", nil, nil),
		shared: prometheus.NewDesc("berth_netpol_shared_peer_sets",
			"Peer sets shared by the pods whose rules have the same identity.", nil, nil)}
}

func (c *verdictCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.packets
	ch <- c.bytes
	ch <- c.peerWrites
	ch <- c.peerDeletes
	ch <- c.swaps
	ch <- c.sets
	ch <- c.shared
}

func (c *verdictCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.dp.Stats()
	ch <- prometheus.MustNewConstMetric(c.peerWrites, prometheus.CounterValue, float64(st.PeerWrites))
	ch <- prometheus.MustNewConstMetric(c.peerDeletes, prometheus.CounterValue, float64(st.PeerDeletes))
	ch <- prometheus.MustNewConstMetric(c.swaps, prometheus.CounterValue, float64(st.RulesetSwaps))
	ch <- prometheus.MustNewConstMetric(c.sets, prometheus.GaugeValue, float64(st.PeerSets))
	ch <- prometheus.MustNewConstMetric(c.shared, prometheus.GaugeValue, float64(st.SharedSets))
	cs, err := c.dp.Counters()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.packets, err)
		return
	}
	for _, v := range []struct {
		dir, verdict string
		n            datapath.Counts
	}{
		{"ingress", "allow", cs.IngressAllowed}, {"ingress", "deny", cs.IngressDenied},
		{"egress", "allow", cs.EgressAllowed}, {"egress", "deny", cs.EgressDenied},
	} {
		ch <- prometheus.MustNewConstMetric(c.packets, prometheus.CounterValue, float64(v.n.Packets), v.dir, v.verdict)
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.CounterValue, float64(v.n.Bytes), v.dir, v.verdict)
	}
}

// logVerdicts writes each verdict event with the policy rule that decided it.
func logVerdicts(ctx context.Context, dp *datapath.Datapath, a *agent.Agent, log *slog.Logger) {
	err := dp.ReadVerdicts(ctx, func(v datapath.Verdict) {
		verdict := "deny"
		if v.Allowed {
			verdict = "allow"
		}
		log.Info("policy verdict", "verdict", verdict, "direction", v.Dir.String(), "proto", v.Protocol,
			"src", v.Src, "sport", v.SrcPort, "dst", v.Dst, "dport", v.DstPort, "ifindex", v.Ifindex, "rule", a.RuleName(v.RuleID))
	})
	if err != nil && ctx.Err() == nil {
		log.Error("verdict log reader stopped", "err", err)
	}
}
