// Package introspect serves ipamd's introspection API on 127.0.0.1:61679
// (/v1/enis, /v1/ipamd-env-settings, /v1/pods) and registers the awscni_*
// pool gauges. Container IDs and interface names are left out of /v1/pods,
// as in the VPC CNI since v1.23, so the output cannot be used to forge
// DelNetwork calls.
package introspect

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/berth-io/berth/ipamd/datastore"
)

// Source is what introspection reads.
type Source struct {
	Store   *datastore.Store
	Env     map[string]string
	MaxPods int
	MaxENIs int
	MaxIPs  int
}

// RegisterMetrics adds the pool gauges to reg.
func RegisterMetrics(reg prometheus.Registerer, src Source) {
	gauge := func(name, help string, f func(datastore.Stats) int) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return float64(f(src.Store.Stats())) }))
	}
	gauge("awscni_total_ip_addresses", "The total number of IP addresses in the pool", func(s datastore.Stats) int { return s.Total })
	gauge("awscni_assigned_ip_addresses", "The number of IP addresses assigned to pods", func(s datastore.Stats) int { return s.Assigned })
	gauge("awscni_eni_allocated", "The number of ENIs allocated", func(s datastore.Stats) int { return s.ENIs })
	gauge("awscni_total_ipv4_prefixes", "The total number of IPv4 prefixes", func(s datastore.Stats) int { return s.Prefixes })
	gauge("awscni_eni_max", "The maximum number of ENIs that can be attached to the instance", func(datastore.Stats) int { return src.MaxENIs })
	gauge("awscni_ip_max", "The maximum number of IP addresses that can be allocated to the instance", func(datastore.Stats) int { return src.MaxIPs })
	gauge("berth_max_pods", "The node's pod capacity ipamd enforces", func(datastore.Stats) int { return src.MaxPods })
	reg.MustRegister(perCIDR{src.Store})
}

// perCIDR exports awscni_assigned_ip_per_cidr and awscni_assigned_ip_per_eni
// from the datastore at scrape time.
type perCIDR struct{ ds *datastore.Store }

var (
	perCIDRDesc = prometheus.NewDesc("awscni_assigned_ip_per_cidr", "The number of IP addresses assigned per CIDR", []string{"cidr"}, nil)
	perENIDesc  = prometheus.NewDesc("awscni_assigned_ip_per_eni", "The number of IP addresses assigned per ENI", []string{"eni"}, nil)
)

func (c perCIDR) Describe(ch chan<- *prometheus.Desc) { ch <- perCIDRDesc; ch <- perENIDesc }

func (c perCIDR) Collect(ch chan<- prometheus.Metric) {
	for _, e := range c.ds.ENIs() {
		total := 0
		for _, ci := range c.ds.CIDRs(e.ID) {
			total += ci.Assigned
			ch <- prometheus.MustNewConstMetric(perCIDRDesc, prometheus.GaugeValue, float64(ci.Assigned), ci.Prefix.String())
		}
		ch <- prometheus.MustNewConstMetric(perENIDesc, prometheus.GaugeValue, float64(total), e.ID)
	}
}

type eniView struct {
	ID          string     `json:"id"`
	DeviceIndex int        `json:"deviceNumber"`
	IsPrimary   bool       `json:"isPrimary"`
	PrimaryIP   string     `json:"primaryIP"`
	CIDRs       []cidrView `json:"availableIPv4Cidrs"`
	Assigned    int        `json:"assignedIPs"`
}

type cidrView struct {
	CIDR     string `json:"cidr"`
	IsPrefix bool   `json:"isPrefix"`
	Assigned int    `json:"assigned"`
	Cooling  int    `json:"coolingDown"`
}

type podView struct {
	Namespace string `json:"podNamespace"`
	Name      string `json:"podName"`
	IP        string `json:"ipv4"`
	ENI       string `json:"eni"`
	Device    int    `json:"deviceNumber"`
	Since     string `json:"assignedAt"`
}

// Handler serves the API.
func Handler(src Source) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/enis", func(w http.ResponseWriter, r *http.Request) {
		var out []eniView
		for _, e := range src.Store.ENIs() {
			v := eniView{ID: e.ID, DeviceIndex: e.DeviceIndex, IsPrimary: e.IsPrimary, PrimaryIP: e.PrimaryIP.String()}
			for _, c := range src.Store.CIDRs(e.ID) {
				v.CIDRs = append(v.CIDRs, cidrView{c.Prefix.String(), c.IsPrefix, c.Assigned, c.Cooling})
				v.Assigned += c.Assigned
			}
			out = append(out, v)
		}
		st := src.Store.Stats()
		writeJSON(w, map[string]any{"totalIPs": st.Total, "assignedIPs": st.Assigned, "coolingIPs": st.Cooling, "enis": out})
	})
	mux.HandleFunc("GET /v1/ipamd-env-settings", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, src.Env) })
	mux.HandleFunc("GET /v1/pods", func(w http.ResponseWriter, r *http.Request) {
		var out []podView
		for _, a := range src.Store.Allocations() {
			out = append(out, podView{a.Meta.PodNamespace, a.Meta.PodName, a.IP.String(), a.ENI, a.Device, a.AssignedAt.UTC().Format(time.RFC3339)})
		}
		writeJSON(w, out)
	})
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// Serve listens on addr until ctx ends.
func Serve(ctx context.Context, addr string, h http.Handler, log *slog.Logger) error {
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("introspection listen %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { <-ctx.Done(); _ = srv.Close() }()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("introspection server", "err", err)
		}
	}()
	return nil
}
