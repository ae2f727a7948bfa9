// Package introspect serves ipamd's introspection API on 127.0.0.1:61679
// and registers the awscni_* pool gauges, in the shapes of the Amazon VPC
// CNI v1.23 so its tools (cni-metrics-helper, dashboards, jq runbooks) read
// berth unchanged. Container IDs and interface names are scrubbed, as in
// the VPC CNI since v1.23, so the output cannot be used to forge
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
	"net/netip"
	"sort"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/berth-io/berth/internal/instancetypes"
	"github.com/berth-io/berth/ipamd/cloud"
	"github.com/berth-io/berth/ipamd/config"
	"github.com/berth-io/berth/ipamd/datastore"
	"github.com/berth-io/berth/ipamd/hostnet"
)

// Source is what introspection reads.
type Source struct {
	Store *datastore.Store
	// Cards are the pools of network cards above 0 (ENABLE_MULTI_NIC), by
	// card index.
	Cards    map[int]*datastore.Store
	Config   config.Config
	Instance cloud.Instance
	MaxPods  int
	// Unmanaged counts the attached ENIs ipamd leaves alone on network
	// card 0 (they take ENI slots); nil means none.
	Unmanaged func() int
	// ENIConfigName names the node's ENIConfig (custom networking); nil
	// without it, when /v1/eni-configs is 404 as on aws-node without the API.
	ENIConfigName func(context.Context) (string, error)
}

// Limits returns awscni_eni_max and awscni_ip_max as the VPC CNI computes
// them: the instance's ENI limit lowered by MAX_ENI (when 1 or more),
// minus unmanaged ENIs, times the addresses an ENI gives pods (its
// IPv4 limit less its own primary address, 16 per slot with prefix
// delegation).
func Limits(cfg config.Config, info instancetypes.Info, unmanaged int) (maxENIs, maxIPs int) {
	maxENIs = info.ENIsPerCard()
	if cfg.MaxENI >= 1 && cfg.MaxENI < maxENIs {
		maxENIs = cfg.MaxENI
	}
	maxENIs -= unmanaged
	perENI := info.IPv4PerENI - 1
	if cfg.PrefixDelegation {
		perENI *= 16
	}
	return maxENIs, perENI * maxENIs
}

func (src Source) limits() (int, int) {
	unmanaged := 0
	if src.Unmanaged != nil {
		unmanaged = src.Unmanaged()
	}
	return Limits(src.Config, src.Instance.Info, unmanaged)
}

// stores are every network card's datastores, card 0 first.
func (src Source) stores() []*datastore.Store {
	cards := make([]int, 0, len(src.Cards))
	for i := range src.Cards {
		cards = append(cards, i)
	}
	sort.Ints(cards)
	out := []*datastore.Store{src.Store}
	for _, i := range cards {
		out = append(out, src.Cards[i])
	}
	return out
}

// RegisterMetrics adds the pool gauges to reg. The address, ENI and
// prefix gauges count every network card's pool: they are the node's.
// (aws-node has each card's datastore set the same gauge, so it shows
// whichever card wrote last.) The limits are card 0's, as max pods is.
func RegisterMetrics(reg prometheus.Registerer, src Source) {
	stores := src.stores()
	gauge := func(name, help string, f func(datastore.Stats) int) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 {
			n := 0
			for _, ds := range stores {
				n += f(ds.Stats())
			}
			return float64(n)
		}))
	}
	gauge("awscni_total_ip_addresses", "The total number of IP addresses", func(s datastore.Stats) int { return s.Total })
	gauge("awscni_assigned_ip_addresses", "The number of IP addresses assigned to pods", func(s datastore.Stats) int { return s.Assigned })
	gauge("awscni_eni_allocated", "The number of ENIs allocated", func(s datastore.Stats) int { return s.ENIs })
	gauge("awscni_total_ipv4_prefixes", "The total number of IPv4 prefixes", func(s datastore.Stats) int { return s.Prefixes })
	gauge("awscni_eni_max", "The maximum number of ENIs that can be attached to the instance, accounting for unmanaged ENIs",
		func(datastore.Stats) int { n, _ := src.limits(); return n })
	gauge("awscni_ip_max", "The maximum number of IP addresses that can be allocated to the instance",
		func(datastore.Stats) int { _, n := src.limits(); return n })
	gauge("berth_max_pods", "The node's pod capacity ipamd enforces", func(datastore.Stats) int { return src.MaxPods })
	// aws-node counts ENIs and addresses it removed while pods held them.
	// ipamd never does (reconcile and shrink leave what a pod holds), so
	// these stay 0; they are there for the dashboards that query them.
	reg.MustRegister(
		prometheus.NewCounter(prometheus.CounterOpts{Name: "awscni_force_removed_enis", Help: "The number of ENIs force removed while they had assigned pods"}),
		prometheus.NewCounter(prometheus.CounterOpts{Name: "awscni_force_removed_ips", Help: "The number of IPs force removed while they had assigned pods"}))
	reg.MustRegister(perCIDR{stores})
}

// perCIDR exports awscni_assigned_ip_per_cidr and awscni_assigned_ip_per_eni
// from every card's datastore at scrape time.
type perCIDR struct{ stores []*datastore.Store }

var (
	perCIDRDesc = prometheus.NewDesc("awscni_assigned_ip_per_cidr", "The total number of IP addresses assigned per cidr", []string{"cidr"}, nil)
	perENIDesc  = prometheus.NewDesc("awscni_assigned_ip_per_eni", "The number of allocated ips partitioned by eni", []string{"eni"}, nil)
)

func (c perCIDR) Describe(ch chan<- *prometheus.Desc) { ch <- perCIDRDesc; ch <- perENIDesc }

func (c perCIDR) Collect(ch chan<- prometheus.Metric) {
	for _, ds := range c.stores {
		for _, e := range ds.ENIs() {
			total := 0
			for _, ci := range ds.CIDRs(e.ID) {
				total += ci.Assigned
				ch <- prometheus.MustNewConstMetric(perCIDRDesc, prometheus.GaugeValue, float64(ci.Assigned), ci.Prefix.String())
			}
			ch <- prometheus.MustNewConstMetric(perENIDesc, prometheus.GaugeValue, float64(total), e.ID)
		}
	}
}

// The /v1/enis types mirror the VPC CNI's datastore.ENIInfos, ENI,
// CidrInfo and AddressInfo field for field (Go field names, no JSON tags,
// except the IPAMKey and IPAMMetadata tags the VPC CNI sets), since jq
// paths such as .["0"].ENIs[].AvailableIPv4Cidrs[].IPAddresses depend on
// them.
type eniInfos struct {
	TotalIPs    int
	AssignedIPs int
	ENIs        map[string]eniInfo
}

type eniInfo struct {
	ID                  string
	IsPrimary           bool
	IsTrunk             bool
	IsEFA               bool
	DeviceNumber        int
	AvailableIPv4Cidrs  map[string]*cidrInfo
	IPv6Cidrs           map[string]*cidrInfo
	IsExcludedForPodIPs bool
	RouteTableID        int
	SubnetID            string
}

type cidrInfo struct {
	Cidr        net.IPNet
	IPAddresses map[string]*addressInfo
	IsPrefix    bool
	// AddressFamily is always empty: the VPC CNI's copy for introspection
	// does not carry it either.
	AddressFamily string
}

type addressInfo struct {
	Address        string
	IPAMKey        ipamKey
	IPAMMetadata   ipamMetadata
	AssignedTime   time.Time
	UnassignedTime time.Time
}

type ipamKey struct {
	NetworkName string `json:"networkName"`
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
}

type ipamMetadata struct {
	K8SPodNamespace string `json:"k8sPodNamespace,omitempty"`
	K8SPodName      string `json:"k8sPodName,omitempty"`
	InterfacesCount int    `json:"interfacesCount,omitempty"`
}

// enis builds the /v1/enis answer: network card index → pool; cards above
// 0 with ENABLE_MULTI_NIC.
func (src Source) enis() map[string]eniInfos {
	out := map[string]eniInfos{"0": src.pool(src.Store)}
	for i, ds := range src.Cards {
		out[strconv.Itoa(i)] = src.pool(ds)
	}
	return out
}

// pool is one network card's /v1/enis entry.
func (src Source) pool(ds *datastore.Store) eniInfos {
	states, total, assigned := ds.Snapshot()
	pool := eniInfos{TotalIPs: total, AssignedIPs: assigned, ENIs: make(map[string]eniInfo, len(states))}
	for _, e := range states {
		v := eniInfo{ID: e.ID, IsPrimary: e.IsPrimary, DeviceNumber: e.DeviceIndex,
			AvailableIPv4Cidrs: make(map[string]*cidrInfo, len(e.CIDRs)), IPv6Cidrs: map[string]*cidrInfo{},
			RouteTableID: hostnet.RouteTable(e.DeviceIndex, e.Card)}
		// The datastore keeps subnet CIDRs, not IDs: the ID is known for
		// ENIs in the node's own subnet only.
		if e.Subnet.IsValid() && e.Subnet == src.Instance.SubnetCIDR {
			v.SubnetID = src.Instance.SubnetID
		}
		for _, c := range e.CIDRs {
			ci := &cidrInfo{Cidr: ipNet(c.Prefix), IsPrefix: c.IsPrefix, IPAddresses: make(map[string]*addressInfo, len(c.Addresses))}
			for _, a := range c.Addresses {
				ai := &addressInfo{Address: a.IP.String(), UnassignedTime: a.FreedAt}
				if a.Alloc != nil {
					ai.IPAMKey = ipamKey{NetworkName: a.Alloc.Key.NetworkName}
					ai.IPAMMetadata = ipamMetadata{K8SPodNamespace: a.Alloc.Meta.PodNamespace, K8SPodName: a.Alloc.Meta.PodName,
						InterfacesCount: a.Alloc.Meta.InterfacesCount}
					ai.AssignedTime = a.Alloc.AssignedAt
				}
				ci.IPAddresses[ai.Address] = ai
			}
			v.AvailableIPv4Cidrs[c.Prefix.String()] = ci
		}
		pool.ENIs[e.ID] = v
	}
	return pool
}

func ipNet(p netip.Prefix) net.IPNet {
	return net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// envSettings is /v1/ipamd-env-settings: the VPC CNI's keys with its
// types (numbers and booleans, not strings), then berth's other settings,
// typed the same way. Custom networking and managing ENIs on
// non-schedulable nodes are not implemented, so they are false.
func envSettings(c config.Config) map[string]any {
	strs := func(ps []netip.Prefix) []string {
		out := make([]string, len(ps))
		for i, p := range ps {
			out[i] = p.String()
		}
		return out
	}
	return map[string]any{
		"WARM_IP_TARGET":                     c.WarmIPTarget,
		"WARM_ENI_TARGET":                    c.WarmENITarget,
		"AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG": c.CustomNetworking,
		"ENABLE_SUBNET_DISCOVERY":            c.SubnetDiscovery,

		"MINIMUM_IP_TARGET":                     c.MinimumIPTarget,
		"WARM_PREFIX_TARGET":                    c.WarmPrefixTarget,
		"ENABLE_PREFIX_DELEGATION":              c.PrefixDelegation,
		"MAX_ENI":                               c.MaxENI,
		"IP_COOLDOWN_PERIOD":                    int(c.IPCooldown / time.Second),
		"AWS_VPC_K8S_CNI_EXTERNALSNAT":          c.ExternalSNAT,
		"AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS":    strs(c.ExcludeSNATCIDRs),
		"AWS_VPC_K8S_CNI_RANDOMIZESNAT":         c.RandomizeSNAT,
		"AWS_VPC_K8S_CNI_CONNMARK":              c.ConnMark,
		"AWS_VPC_CNI_NODE_PORT_SUPPORT":         c.NodePortSupport,
		"AWS_EXTERNAL_SERVICE_CIDRS":            strs(c.ExternalServiceCIDRs),
		"AWS_VPC_ENI_MTU":                       c.MTU,
		"POD_MTU":                               c.PodMTU,
		"CLUSTER_NAME":                          c.ClusterName,
		"NETWORK_POLICY_ENFORCING_MODE":         c.NetworkPolicyMode,
		"AWS_VPC_K8S_CNI_VETHPREFIX":            c.VethPrefix,
		"DISABLE_LEAKED_ENI_CLEANUP":            c.DisableLeakedENICleanup,
		"MANAGE_UNTAGGED_ENI":                   c.ManageUntaggedENIs,
		"AWS_MANAGE_ENIS_NON_SCHEDULABLE":       c.ManageENIsNonSchedulable,
		"ANNOTATE_POD_IP":                       c.AnnotatePodIP,
		"ENABLE_IMDS_ONLY_MODE":                 c.IMDSOnly,
		"DISABLE_NETWORK_RESOURCE_PROVISIONING": c.NoProvisioning,
		"MAX_PODS":                              c.MaxPods,
		"ADD_WAIT_TIMEOUT":                      c.AddWait.String(),
		"HTTP_TIMEOUT":                          int(c.HTTPTimeout / time.Second),
	}
}

// podInfo is an entry of /v1/pods in the shape the VPC CNI served until
// v1.7 and its troubleshooting guide still shows.
type podInfo struct {
	IP           string
	DeviceNumber int
}

// pods keys each pod's eth0 allocation "<pod>_<namespace>_<container
// ID>" with the container ID left empty (scrubbed): card 0's, or another
// card's for a pod that got its one address there. Should a pod hold two
// addresses (an old sandbox not yet deleted), the newest allocation wins.
func (src Source) pods() map[string]podInfo {
	allocs := src.Store.Allocations()
	for card, ds := range src.Cards {
		for _, a := range ds.Allocations() {
			if a.Interface(card) == 0 {
				allocs = append(allocs, a)
			}
		}
	}
	sort.SliceStable(allocs, func(i, j int) bool { return allocs[i].AssignedAt.Before(allocs[j].AssignedAt) })
	out := make(map[string]podInfo, len(allocs))
	for _, a := range allocs {
		out[a.Meta.PodName+"_"+a.Meta.PodNamespace+"_"] = podInfo{IP: a.IP.String(), DeviceNumber: a.Device}
	}
	return out
}

// networkutilsEnvSettings is /v1/networkutils-env-settings: aws-node's
// datapath settings, with its keys and types (the SNAT randomisation as
// its number: 0 none, 1 hashrandom, 2 prng; CIDR lists null when unset).
func networkutilsEnvSettings(c config.Config) map[string]any {
	cidrs := func(ps []netip.Prefix) []string {
		var out []string
		for _, p := range ps {
			out = append(out, p.String())
		}
		return out
	}
	return map[string]any{
		"AWS_VPC_K8S_CNI_CONNMARK":           c.ConnMark,
		"AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS": cidrs(c.ExcludeSNATCIDRs),
		"AWS_VPC_K8S_CNI_EXTERNALSNAT":       c.ExternalSNAT,
		"AWS_EXTERNAL_SERVICE_CIDRS":         cidrs(c.ExternalServiceCIDRs),
		"AWS_VPC_ENI_MTU":                    c.MTU,
		"AWS_VPC_K8S_CNI_VETHPREFIX":         c.VethPrefix,
		"AWS_VPC_CNI_NODE_PORT_SUPPORT":      c.NodePortSupport,
		"AWS_VPC_K8S_CNI_RANDOMIZESNAT":      map[string]int{"none": 0, "hashrandom": 1, "prng": 2}[c.RandomizeSNAT],
	}
}

// Handler serves the API. As aws-node's, it answers any method.
func Handler(src Source) http.Handler {
	routes := map[string]func() any{
		"/v1/enis":                      func() any { return src.enis() },
		"/v1/ipamd-env-settings":        func() any { return envSettings(src.Config) },
		"/v1/networkutils-env-settings": func() any { return networkutilsEnvSettings(src.Config) },
		"/v1/pods":                      func() any { return src.pods() },
	}
	mux := http.NewServeMux()
	paths := make([]string, 0, len(routes)+1)
	for path, build := range routes {
		paths = append(paths, path)
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, build()) })
	}
	// The node's ENIConfig name, read from its Node; 404 when it cannot
	// be, as aws-node answers.
	paths = append(paths, "/v1/eni-configs")
	mux.HandleFunc("/v1/eni-configs", func(w http.ResponseWriter, r *http.Request) {
		if src.ENIConfigName == nil {
			http.Error(w, http.StatusText(http.StatusNotFound), http.StatusNotFound)
			return
		}
		name, err := src.ENIConfigName(r.Context())
		if err != nil {
			http.Error(w, http.StatusText(http.StatusNotFound), http.StatusNotFound)
			return
		}
		writeJSON(w, name)
	})
	sort.Strings(paths)
	// Any other path lists the commands, as the VPC CNI's root does.
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, struct{ AvailableCommands []string }{paths})
	})
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, fmt.Sprintf("marshal: %v", err), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
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
