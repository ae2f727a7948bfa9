package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/containernetworking/cni/libcni"

	"github.com/berth-io/berth/ipamd/config"
)

// TestConflistPodMTU: berth-cni sets the pod veth's MTU from the conflist's
// "mtu", which is POD_MTU (AWS_VPC_ENI_MTU when unset), as aws-node's
// entrypoint writes it; the ENIs' MTU does not leak into it.
func TestConflistPodMTU(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want int
	}{
		{nil, 9001},
		{map[string]string{"AWS_VPC_ENI_MTU": "1500"}, 1500},
		{map[string]string{"POD_MTU": "1400"}, 1400},
		{map[string]string{"AWS_VPC_ENI_MTU": "9001", "POD_MTU": "1280"}, 1280},
	} {
		cfg, err := config.FromEnv(func(k string) string { return tc.env[k] })
		if err != nil {
			t.Fatal(err)
		}
		if got := berthPlugin(t, cfg, defaultCheckpoint); got.MTU != tc.want {
			t.Errorf("%v: conflist's mtu %d, want %d", tc.env, got.MTU, tc.want)
		}
	}
}

var defaultCheckpoint = filepath.Join(DefaultStateDir, CheckpointName)

// TestConflistStateFile: berth-cni's GC and CHECK read ipamd's checkpoint,
// so a checkpoint other than the default goes into the conflist.
func TestConflistStateFile(t *testing.T) {
	cfg, err := config.FromEnv(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{defaultCheckpoint: "", "/run/node-2/ipam.json": "/run/node-2/ipam.json"} {
		if got := berthPlugin(t, cfg, path); got.StateFile != want {
			t.Errorf("checkpoint %s: conflist's ipamStateFile %q, want %q", path, got.StateFile, want)
		}
	}
}

// AWS_VPC_K8S_CNI_BACKING_STORE moves the checkpoint, as in aws-node; by
// default it is ipam.json in --state-dir.
func TestBackingStore(t *testing.T) {
	if got := newRootCommand().Flags().Lookup("checkpoint").Value.String(); got != "" {
		t.Fatalf("--checkpoint default %q, want \"\" (ipam.json in --state-dir)", got)
	}
	t.Setenv("AWS_VPC_K8S_CNI_BACKING_STORE", "/var/lib/aws-node/ipam.json")
	if got := newRootCommand().Flags().Lookup("checkpoint").Value.String(); got != "/var/lib/aws-node/ipam.json" {
		t.Fatalf("--checkpoint from AWS_VPC_K8S_CNI_BACKING_STORE: %q", got)
	}
}

// berthPlugin is the berth-cni entry of the conflist ipamd writes.
type berthPluginConf struct {
	MTU       int    `json:"mtu"`
	StateFile string `json:"ipamStateFile"`
}

func berthPlugin(t *testing.T, cfg config.Config, checkpoint string) berthPluginConf {
	t.Helper()
	b, err := conflist(DefaultSocket, "", "", checkpoint, "1.1.0", cfg, false)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Plugins []berthPluginConf `json:"plugins"`
	}
	if err := json.Unmarshal(b, &got); err != nil || len(got.Plugins) != 1 {
		t.Fatalf("conflist %s: %v", b, err)
	}
	return got.Plugins[0]
}

// The conflist carries aws-node's plugin log settings and chains the
// plugins it chains, in its order: portmap, bandwidth
// (ENABLE_BANDWIDTH_PLUGIN), tuning switching IPv6 off (DISABLE_POD_V6).
func TestConflistChainsAndPluginLog(t *testing.T) {
	env := map[string]string{"ENABLE_BANDWIDTH_PLUGIN": "true", "DISABLE_POD_V6": "true",
		"AWS_VPC_K8S_PLUGIN_LOG_FILE": "/var/log/p.log", "AWS_VPC_K8S_PLUGIN_LOG_LEVEL": "WARN"}
	cfg, err := config.FromEnv(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	b, err := conflist(DefaultSocket, "", "", defaultCheckpoint, "1.0.0", cfg, true)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Plugins []struct {
			Type         string            `json:"type"`
			LogFile      string            `json:"pluginLogFile"`
			LogLevel     string            `json:"pluginLogLevel"`
			Capabilities map[string]bool   `json:"capabilities"`
			Sysctl       map[string]string `json:"sysctl"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(b, &got); err != nil || len(got.Plugins) != 4 {
		t.Fatalf("conflist %s: %v", b, err)
	}
	var types []string
	for _, p := range got.Plugins {
		types = append(types, p.Type)
	}
	if fmt.Sprint(types) != "[berth-cni portmap bandwidth tuning]" {
		t.Fatalf("chain %v", types)
	}
	if p := got.Plugins[0]; p.LogFile != "/var/log/p.log" || p.LogLevel != "WARN" {
		t.Errorf("plugin log %q %q", p.LogFile, p.LogLevel)
	}
	if c := got.Plugins[0].Capabilities; len(c) != 1 || !c["io.kubernetes.cri.pod-annotations"] {
		t.Errorf("berth-cni's capabilities %v, want the pod annotations only", c)
	}
	if !got.Plugins[2].Capabilities["bandwidth"] || got.Plugins[3].Sysctl["net.ipv6.conf.all.disable_ipv6"] != "1" {
		t.Errorf("bandwidth/tuning entries: %s", b)
	}
}

// A node taken over from aws-node: its 10-aws.conflist sorts before
// berth's, and the runtime takes the first file, so berth-cni would never
// run. ipamd moves it aside (after writing its own); a conflist that is
// not the VPC CNI's stays.
func TestRetireVPCCNIConflist(t *testing.T) {
	dir := t.TempDir()
	aws := `{"cniVersion":"0.4.0","name":"aws-cni","disableCheck":true,"plugins":[` +
		`{"name":"aws-cni","type":"aws-cni","vethPrefix":"eni","mtu":"9001"},` +
		`{"name":"egress-cni","type":"egress-cni","enabled":"false"},` +
		`{"type":"portmap","capabilities":{"portMappings":true},"snat":true}]}`
	if err := os.WriteFile(filepath.Join(dir, VPCCNIConflist), []byte(aws), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.FromEnv(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if err := writeConflist(dir, DefaultSocket, "", "", defaultCheckpoint, "1.1.0", cfg, false); err != nil {
		t.Fatal(err)
	}
	aside, err := retireVPCCNIConflist(dir)
	if err != nil || aside != filepath.Join(dir, VPCCNIConflist+".berth-bak") {
		t.Fatalf("retire = %q, %v", aside, err)
	}
	if b, err := os.ReadFile(aside); err != nil || string(b) != aws {
		t.Fatalf("moved-aside conflist: %q %v", b, err)
	}
	// What a runtime would load: libcni's ordering, the first file wins.
	files, err := libcni.ConfFiles(dir, []string{".conf", ".conflist", ".json"})
	if err != nil || len(files) != 1 || filepath.Base(files[0]) != ConflistName {
		t.Fatalf("config files the runtime sees: %v %v", files, err)
	}
	if aside, err := retireVPCCNIConflist(dir); aside != "" || err != nil {
		t.Fatalf("second retire = %q, %v", aside, err)
	}

	// Someone else's file under that name (not the aws-cni plugin) stays.
	other := `{"cniVersion":"1.0.0","name":"aws-cni","plugins":[{"type":"bridge"}]}`
	if err := os.WriteFile(filepath.Join(dir, VPCCNIConflist), []byte(other), 0o644); err != nil {
		t.Fatal(err)
	}
	if aside, err := retireVPCCNIConflist(dir); aside != "" || err != nil {
		t.Fatalf("retired a conflist that is not the VPC CNI's: %q, %v", aside, err)
	}
}

// aws-node's AWS_VPC_K8S_CNI_LOGLEVEL sets ipamd's --log-level default;
// --log-level on the command line still wins.
func TestVPCCNILogLevel(t *testing.T) {
	for v, want := range map[string]string{"DEBUG": "debug", "info": "info", "Warn": "warn", "ERROR": "error", "FATAL": "error", "TRACE": "", "": ""} {
		got, ok := vpcCNILogLevel(v)
		if got != want || ok != (want != "") {
			t.Errorf("%q → %q %v, want %q", v, got, ok, want)
		}
	}
}

// aws-node's variables give flags their defaults (AWS_VPC_K8S_CNI_LOGLEVEL,
// HOST_CNI_BIN_PATH, HOST_CNI_CONFDIR_PATH, INTROSPECTION_BIND_ADDRESS,
// DISABLE_INTROSPECTION, DISABLE_METRICS); the command line still wins.
func TestVPCCNIFlagDefaults(t *testing.T) {
	for k, v := range map[string]string{"AWS_VPC_K8S_CNI_LOGLEVEL": "DEBUG", "HOST_CNI_BIN_PATH": "/host/opt/cni/bin",
		"HOST_CNI_CONFDIR_PATH": "/host/etc/cni/net.d", "INTROSPECTION_BIND_ADDRESS": "0.0.0.0:61679", "DISABLE_METRICS": "true"} {
		t.Setenv(k, v)
	}
	root := newRootCommand()
	value := func(name string) string {
		f := root.Flags().Lookup(name)
		if f == nil {
			f = root.PersistentFlags().Lookup(name)
		}
		return f.Value.String()
	}
	for flag, want := range map[string]string{"log-level": "debug", "cni-bin-dir": "/host/opt/cni/bin", "cni-conf-dir": "/host/etc/cni/net.d",
		"introspection-addr": "0.0.0.0:61679", "metrics-addr": ""} {
		if got := value(flag); got != want {
			t.Errorf("--%s from the environment: %q, want %q", flag, got, want)
		}
	}
	if err := root.ParseFlags([]string{"--log-level", "warn", "--metrics-addr", ":9999"}); err != nil {
		t.Fatal(err)
	}
	if value("log-level") != "warn" || value("metrics-addr") != ":9999" {
		t.Fatalf("the command line lost: --log-level %q --metrics-addr %q", value("log-level"), value("metrics-addr"))
	}
	t.Setenv("DISABLE_INTROSPECTION", "true")
	if got := newRootCommand().Flags().Lookup("introspection-addr").Value.String(); got != "" {
		t.Fatalf("DISABLE_INTROSPECTION=true: --introspection-addr %q", got)
	}
}

// The default conflist offers CNI 1.1 to runtimes that have it and 1.0 to
// those that do not, through the spec's cniVersions: libcni (v1.3, CNI
// 1.1) picks 1.1.0; a reader of cniVersion alone (the CNI library of
// containerd 1.6 and 1.7) gets 1.0.0. Another --cni-version is written
// alone.
func TestConflistOffersCNIVersions(t *testing.T) {
	cfg, err := config.FromEnv(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	b, err := conflist(DefaultSocket, "", "", defaultCheckpoint, "1.1.0", cfg, false)
	if err != nil {
		t.Fatal(err)
	}
	var raw struct {
		CNIVersion  string   `json:"cniVersion"`
		CNIVersions []string `json:"cniVersions"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	if raw.CNIVersion != "1.0.0" || fmt.Sprint(raw.CNIVersions) != "[1.0.0 1.1.0]" {
		t.Fatalf("cniVersion %q, cniVersions %v", raw.CNIVersion, raw.CNIVersions)
	}
	list, err := libcni.ConfListFromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	if list.CNIVersion != "1.1.0" {
		t.Fatalf("libcni chose %s, want 1.1.0", list.CNIVersion)
	}
	b, err = conflist(DefaultSocket, "", "", defaultCheckpoint, "1.0.0", cfg, false)
	if err != nil {
		t.Fatal(err)
	}
	raw.CNIVersions = nil
	if err := json.Unmarshal(b, &raw); err != nil || raw.CNIVersion != "1.0.0" || raw.CNIVersions != nil {
		t.Fatalf("--cni-version 1.0.0: %s (%v)", b, err)
	}
}

// --npa-socket reaches berth-cni through the conflist when it is not
// aws-node's path (several nodes on one host each have their agent).
func TestConflistNPASocket(t *testing.T) {
	cfg, err := config.FromEnv(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	for npa, want := range map[string]string{DefaultNPASocket: "", "/srv/node1/npa.sock": "/srv/node1/npa.sock"} {
		b, err := conflist(DefaultSocket, "", npa, defaultCheckpoint, "1.1.0", cfg, false)
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			Plugins []struct {
				NPASocket *string `json:"npaSocket"`
			} `json:"plugins"`
		}
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		if p := got.Plugins[0].NPASocket; (want == "") != (p == nil) || p != nil && *p != want {
			t.Errorf("--npa-socket %s: conflist %s", npa, b)
		}
	}
}
