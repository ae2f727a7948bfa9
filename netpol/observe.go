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
	dp             *datapath.Datapath
	packets, bytes *prometheus.Desc
}

func datapathCollector(dp *datapath.Datapath) prometheus.Collector {
	l := []string{"direction", "verdict"}
	return &verdictCollector{dp: dp,
		packets: prometheus.NewDesc("berth_netpol_packets_total", "Packets judged by the policy programs, by direction (of the pod) and verdict.", l, nil),
		bytes:   prometheus.NewDesc("berth_netpol_bytes_total", "Bytes judged by the policy programs, by direction (of the pod) and verdict.", l, nil)}
}

func (c *verdictCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.packets
	ch <- c.bytes
}

func (c *verdictCollector) Collect(ch chan<- prometheus.Metric) {
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
