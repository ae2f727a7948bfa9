// Package imds is localcloud's EC2 Instance Metadata Service (IMDSv2): the
// session-token protocol, the metadata tree of one instance, its user
// data, identity document and role credentials.
//
// Metadata lags EC2 state as on AWS: a change (an ENI attached, an address
// assigned) shows only once it is Lag old, so clients must cope with
// stale metadata. A ticker snapshots every live instance's view; requests
// are answered from the newest snapshot that is at least Lag old.
package imds

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net/http"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/berth-io/berth/internal/instancetypes"
	"github.com/berth-io/berth/localcloud/ec2"
	"github.com/berth-io/berth/localcloud/iam"
)

// Config configures IMDS.
type Config struct {
	Lag    time.Duration
	Region string
	Now    func() time.Time
}

// Server answers metadata requests for instances.
type Server struct {
	cfg Config
	ec2 *ec2.Service
	iam *iam.Store
	log *slog.Logger

	mu      sync.Mutex
	lag     time.Duration
	history map[string][]snapshot // instance ID -> oldest first
	tokens  map[string]token
	creds   map[string]iam.Key // instance ID -> cached role credentials
}

type token struct {
	instance string
	expires  time.Time
}

type snapshot struct {
	at   time.Time
	view *view
}

// view is what IMDS knows of one instance at one moment.
type view struct {
	ID, Type, AMI, AZ, AZID, PrivateIP, Hostname, ProfileARN, HTTPTokens, Arch string
	UserData                                                                   []byte
	HasUserData                                                                bool
	LaunchTime                                                                 time.Time
	GroupNames                                                                 []string
	Interfaces                                                                 []iface
	Volumes                                                                    [][2]string // device, volume ID
	Account                                                                    string
}

type iface struct {
	MAC, ID, SubnetID, VPCID, SubnetCIDR, SubnetIPv6CIDR, Hostname string
	VPCCIDRs                                                       []string // the primary first
	Device, Card                                                   int
	IPv4s, Prefixes, IPv6s, GroupIDs, GroupNames                   []string
}

// New returns an IMDS server over the EC2 and IAM state.
func New(cfg Config, ec2svc *ec2.Service, store *iam.Store, log *slog.Logger) *Server {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Server{cfg: cfg, ec2: ec2svc, iam: store, log: log.With("service", "imds"), lag: cfg.Lag,
		history: map[string][]snapshot{}, tokens: map[string]token{}, creds: map[string]iam.Key{}}
}

// SetLag changes the metadata lag at runtime.
func (s *Server) SetLag(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lag = d
}

// Run refreshes snapshots until ctx ends.
func (s *Server) Run(ctx context.Context) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.refresh(ctx, "")
		}
	}
}

// refresh snapshots one instance (or all when id is "").
func (s *Server) refresh(ctx context.Context, id string) {
	views := map[string]*view{}
	s.ec2.View(ctx, func(st *ec2.State) {
		for iid, inst := range st.Instances {
			if (id == "" || iid == id) && (inst.State == "pending" || inst.State == "running") {
				views[iid] = s.build(st, inst)
			}
		}
	})
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if id == "" {
		for iid := range s.history {
			if views[iid] == nil {
				delete(s.history, iid)
				delete(s.creds, iid)
			}
		}
	}
	for iid, v := range views {
		h := s.history[iid]
		if n := len(h); n > 0 && reflect.DeepEqual(h[n-1].view, v) {
			continue
		}
		h = append(h, snapshot{at: now, view: v})
		// Keep the newest snapshot older than the lag and all younger ones.
		cut := 0
		for i := range h {
			if now.Sub(h[i].at) >= s.lag {
				cut = i
			}
		}
		s.history[iid] = h[cut:]
	}
	if id != "" && views[id] == nil {
		delete(s.history, id)
	}
}

// current returns the view to serve for an instance, or nil.
func (s *Server) current(ctx context.Context, id string) *view {
	// Record any change now (the ticker in Run does so continuously); a new
	// instance sees itself at once.
	s.refresh(ctx, id)
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.history[id]
	if len(h) == 0 {
		return nil
	}
	now := s.cfg.Now()
	v := h[0].view
	for _, snap := range h {
		if now.Sub(snap.at) >= s.lag {
			v = snap.view
		}
	}
	return v
}

func (s *Server) build(st *ec2.State, inst *ec2.Instance) *view {
	info, _ := instancetypes.Lookup(inst.Type)
	v := &view{ID: inst.ID, Type: inst.Type, AMI: inst.ImageID, AZ: inst.AZ, AZID: s.ec2.AZID(inst.AZ), PrivateIP: inst.PrivateIP,
		Hostname: hostname(inst.PrivateIP, s.cfg.Region), ProfileARN: inst.InstanceProfileARN, HTTPTokens: inst.MetadataHTTPTokens,
		Arch: info.Architecture, LaunchTime: inst.LaunchTime, Account: s.iam.Account()}
	if inst.UserData != "" {
		if b, err := base64.StdEncoding.DecodeString(inst.UserData); err == nil {
			v.UserData, v.HasUserData = b, true
		}
	}
	for _, g := range inst.SecurityGroups {
		if sg := st.SecurityGroups[g]; sg != nil {
			v.GroupNames = append(v.GroupNames, sg.Name)
		}
	}
	for _, e := range st.ENIs {
		a := e.Attachment
		if a == nil || a.InstanceID != inst.ID || a.Status == "attaching" {
			continue
		}
		sub := st.Subnets[e.SubnetID]
		vpc := st.VPCs[e.VPCID]
		f := iface{MAC: e.MAC, ID: e.ID, SubnetID: e.SubnetID, VPCID: e.VPCID, Device: a.DeviceIndex, Card: a.NetworkCardIndex,
			Prefixes: slices.Clone(e.IPv4Prefixes), IPv6s: slices.Clone(e.IPv6Addresses), GroupIDs: slices.Clone(e.Groups)}
		if sub != nil {
			f.SubnetCIDR, f.SubnetIPv6CIDR = sub.CIDR, sub.IPv6CIDR
		}
		if vpc != nil {
			f.VPCCIDRs = vpc.IPv4CIDRs()
		}
		for _, ip := range e.PrivateIPs {
			if ip.Primary {
				f.IPv4s = append([]string{ip.Address}, f.IPv4s...)
				f.Hostname = hostname(ip.Address, s.cfg.Region)
			} else {
				f.IPv4s = append(f.IPv4s, ip.Address)
			}
		}
		for _, g := range e.Groups {
			if sg := st.SecurityGroups[g]; sg != nil {
				f.GroupNames = append(f.GroupNames, sg.Name)
			}
		}
		v.Interfaces = append(v.Interfaces, f)
	}
	sort.Slice(v.Interfaces, func(i, j int) bool {
		a, b := v.Interfaces[i], v.Interfaces[j]
		if a.Card != b.Card {
			return a.Card < b.Card
		}
		return a.Device < b.Device
	})
	for _, vol := range st.Volumes {
		for _, a := range vol.Attachments {
			if a.InstanceID == inst.ID && a.State == "attached" {
				v.Volumes = append(v.Volumes, [2]string{a.Device, vol.ID})
			}
		}
	}
	sort.Slice(v.Volumes, func(i, j int) bool { return v.Volumes[i][0] < v.Volumes[j][0] })
	return v
}

func hostname(ip, region string) string {
	h := "ip-" + strings.ReplaceAll(ip, ".", "-")
	if region == "us-east-1" {
		return h + ".ec2.internal"
	}
	return h + "." + region + ".compute.internal"
}

// role returns the instance's role: its profile's name, or the default
// node role.
func role(v *view) string {
	if v.ProfileARN == "" {
		return iam.DefaultNodeRole
	}
	return v.ProfileARN[strings.LastIndex(v.ProfileARN, "/")+1:]
}

// credentials returns cached role credentials, refreshed an hour before
// they expire (as EC2 does, so SDKs never see an expired key).
func (s *Server) credentials(v *view) (iam.Key, error) {
	s.mu.Lock()
	k, ok := s.creds[v.ID]
	s.mu.Unlock()
	if ok && s.cfg.Now().Before(k.Expiration.Add(-time.Hour)) {
		return k, nil
	}
	k, err := s.iam.Issue(role(v), v.ID, 6*time.Hour)
	if err != nil {
		return iam.Key{}, err
	}
	s.mu.Lock()
	s.creds[v.ID] = k
	s.mu.Unlock()
	return k, nil
}

func (s *Server) newToken(instance string, ttl time.Duration) string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	tok := base64.RawURLEncoding.EncodeToString(b[:])
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for t, info := range s.tokens {
		if now.After(info.expires) {
			delete(s.tokens, t)
		}
	}
	s.tokens[tok] = token{instance: instance, expires: now.Add(ttl)}
	return tok
}

func (s *Server) validToken(instance, tok string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	info, ok := s.tokens[tok]
	return ok && info.instance == instance && s.cfg.Now().Before(info.expires)
}

// Handler serves the metadata of one instance.
func (s *Server) Handler(instanceID string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.serve(w, r, instanceID)
	})
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request, id string) {
	v := s.current(r.Context(), id)
	if v == nil {
		http.Error(w, "Not Found", http.StatusNotFound)
		return
	}
	switch r.Method {
	case http.MethodPut:
		if r.URL.Path != "/latest/api/token" {
			http.Error(w, "Not Found", http.StatusNotFound)
			return
		}
		if r.Header.Get("X-Forwarded-For") != "" {
			http.Error(w, "Forbidden", http.StatusForbidden)
			return
		}
		ttl, err := strconv.Atoi(r.Header.Get("X-aws-ec2-metadata-token-ttl-seconds"))
		if err != nil || ttl < 1 || ttl > 21600 {
			http.Error(w, "Bad Request", http.StatusBadRequest)
			return
		}
		tok := s.newToken(id, time.Duration(ttl)*time.Second)
		w.Header().Set("X-aws-ec2-metadata-token-ttl-seconds", strconv.Itoa(ttl))
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte(tok))
		return
	case http.MethodGet, http.MethodHead:
	default:
		w.Header().Set("Allow", "GET, HEAD, PUT")
		http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
		return
	}
	tok := r.Header.Get("X-aws-ec2-metadata-token")
	if tok != "" && !s.validToken(id, tok) {
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
		return
	}
	if tok == "" && v.HTTPTokens != "optional" {
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
		return
	}
	body, ok, err := s.lookup(v, r.URL.Path)
	if err != nil {
		s.log.Error("imds", "instance", id, "path", r.URL.Path, "err", err)
		http.Error(w, "Internal Server Error", http.StatusInternalServerError)
		return
	}
	if !ok {
		http.Error(w, "Not Found", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write(body)
}

// lookup resolves a path: a leaf's content, or a directory's listing.
func (s *Server) lookup(v *view, path string) ([]byte, bool, error) {
	switch path {
	case "/latest/user-data", "/latest/user-data/":
		return v.UserData, v.HasUserData, nil
	case "/latest/dynamic/instance-identity/document":
		b, err := json.MarshalIndent(map[string]any{
			"accountId": v.Account, "architecture": v.Arch, "availabilityZone": v.AZ, "imageId": v.AMI,
			"instanceId": v.ID, "instanceType": v.Type, "pendingTime": v.LaunchTime.UTC().Format(time.RFC3339),
			"privateIp": v.PrivateIP, "region": s.cfg.Region, "version": "2017-09-30",
			"billingProducts": nil, "devpayProductCodes": nil, "marketplaceProductCodes": nil, "kernelId": nil, "ramdiskId": nil,
		}, "", "  ")
		return b, true, err
	case "/latest", "/latest/":
		return []byte("api/\ndynamic/\nmeta-data/\nuser-data"), true, nil
	case "/latest/dynamic", "/latest/dynamic/":
		return []byte("instance-identity/"), true, nil
	case "/latest/dynamic/instance-identity", "/latest/dynamic/instance-identity/":
		return []byte("document"), true, nil
	}
	rest, ok := strings.CutPrefix(path, "/latest/meta-data")
	if !ok {
		return nil, false, nil
	}
	rest = strings.TrimPrefix(rest, "/")
	tree := s.tree(v)
	credPrefix := "iam/security-credentials/" + role(v)
	if rest == credPrefix && v.ID != "" {
		k, err := s.credentials(v)
		if err != nil {
			return nil, false, err
		}
		b, err := json.MarshalIndent(map[string]string{"Code": "Success", "LastUpdated": s.cfg.Now().UTC().Format(time.RFC3339),
			"Type": "AWS-HMAC", "AccessKeyId": k.AccessKeyID, "SecretAccessKey": k.SecretAccessKey, "Token": k.SessionToken,
			"Expiration": k.Expiration.UTC().Format(time.RFC3339)}, "", "  ")
		return b, true, err
	}
	if leaf, ok := tree[strings.TrimSuffix(rest, "/")]; ok && !strings.HasSuffix(rest, "/") {
		return []byte(leaf), true, nil
	}
	// A directory: list its direct children.
	dir := strings.TrimSuffix(rest, "/")
	if dir != "" {
		dir += "/"
	}
	children := map[string]bool{}
	for k := range tree {
		sub, ok := strings.CutPrefix(k, dir)
		if !ok || sub == "" {
			continue
		}
		if i := strings.Index(sub, "/"); i >= 0 {
			children[sub[:i+1]] = true
		} else {
			children[sub] = true
		}
	}
	if len(children) == 0 {
		return nil, false, nil
	}
	names := make([]string, 0, len(children))
	for c := range children {
		names = append(names, c)
	}
	sort.Strings(names)
	return []byte(strings.Join(names, "\n")), true, nil
}

// tree returns every leaf path under meta-data/ with its content.
func (s *Server) tree(v *view) map[string]string {
	t := map[string]string{
		"ami-id":                              v.AMI,
		"ami-launch-index":                    "0",
		"hostname":                            v.Hostname,
		"instance-id":                         v.ID,
		"instance-type":                       v.Type,
		"instance-life-cycle":                 "on-demand",
		"local-hostname":                      v.Hostname,
		"local-ipv4":                          v.PrivateIP,
		"placement/availability-zone":         v.AZ,
		"placement/availability-zone-id":      v.AZID,
		"placement/region":                    s.cfg.Region,
		"security-groups":                     strings.Join(v.GroupNames, "\n"),
		"services/domain":                     "amazonaws.com",
		"services/partition":                  "aws",
		"block-device-mapping/ami":            "/dev/xvda",
		"block-device-mapping/root":           "/dev/xvda",
		"iam/security-credentials/" + role(v): "",
	}
	if v.ProfileARN != "" {
		info, _ := json.MarshalIndent(map[string]string{"Code": "Success", "LastUpdated": v.LaunchTime.UTC().Format(time.RFC3339),
			"InstanceProfileArn": v.ProfileARN, "InstanceProfileId": "AIPA" + strings.ToUpper(strings.TrimPrefix(v.ID, "i-"))}, "", "  ")
		t["iam/info"] = string(info)
	}
	for i, vol := range v.Volumes {
		t["block-device-mapping/ebs"+strconv.Itoa(i+1)] = strings.TrimPrefix(vol[0], "/dev/")
	}
	for _, f := range v.Interfaces {
		if f.Device == 0 && f.Card == 0 {
			t["mac"] = f.MAC
		}
		p := "network/interfaces/macs/" + f.MAC + "/"
		t[p+"device-number"] = strconv.Itoa(f.Device)
		t[p+"network-card"] = strconv.Itoa(f.Card)
		t[p+"interface-id"] = f.ID
		t[p+"local-hostname"] = f.Hostname
		t[p+"local-ipv4s"] = strings.Join(f.IPv4s, "\n")
		t[p+"mac"] = f.MAC
		t[p+"owner-id"] = v.Account
		t[p+"security-group-ids"] = strings.Join(f.GroupIDs, "\n")
		t[p+"security-groups"] = strings.Join(f.GroupNames, "\n")
		t[p+"subnet-id"] = f.SubnetID
		t[p+"subnet-ipv4-cidr-block"] = f.SubnetCIDR
		t[p+"vpc-id"] = f.VPCID
		if len(f.VPCCIDRs) > 0 {
			t[p+"vpc-ipv4-cidr-block"] = f.VPCCIDRs[0]
			t[p+"vpc-ipv4-cidr-blocks"] = strings.Join(f.VPCCIDRs, "\n")
		}
		if len(f.Prefixes) > 0 {
			t[p+"ipv4-prefix"] = strings.Join(f.Prefixes, "\n")
		}
		if len(f.IPv6s) > 0 {
			t[p+"ipv6s"] = strings.Join(f.IPv6s, "\n")
		}
		if f.SubnetIPv6CIDR != "" {
			t[p+"subnet-ipv6-cidr-blocks"] = f.SubnetIPv6CIDR
		}
	}
	return t
}
