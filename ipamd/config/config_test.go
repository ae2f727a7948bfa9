package config

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) Getenv { return func(k string) string { return m[k] } }

func TestDefaults(t *testing.T) {
	c, err := FromEnv(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.WarmENITarget != 1 || c.WarmIPTarget != 0 || c.MaxENI != -1 || c.IPCooldown != 30*time.Second || c.MTU != 9001 ||
		c.VethPrefix != "eni" || !c.SubnetDiscovery || c.AddWait != 30*time.Second || c.PrefixDelegation || c.WarmPrefixTarget != 0 {
		t.Fatalf("defaults %+v", c)
	}
}

func TestPrefixDelegationDefaults(t *testing.T) {
	c, err := FromEnv(env(map[string]string{"ENABLE_PREFIX_DELEGATION": "true", "WARM_IP_TARGET": "5", "AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS": "10.1.0.0/16, 192.168.0.0/24", "ADDITIONAL_ENI_TAGS": `{"team":"net"}`}))
	if err != nil {
		t.Fatal(err)
	}
	if !c.PrefixDelegation || c.WarmPrefixTarget != 1 || c.WarmIPTarget != 5 || len(c.ExcludeSNATCIDRs) != 2 || c.AdditionalENITags["team"] != "net" {
		t.Fatalf("%+v", c)
	}
}

// TestAllErrorsReported: the values that stop aws-node from starting
// (its entrypoint's checks, and ipamd's on the policy mode) stop ipamd too,
// all reported at once.
func TestAllErrorsReported(t *testing.T) {
	_, err := FromEnv(env(map[string]string{
		"AWS_VPC_ENI_MTU": "10000", "POD_MTU": "575", "AWS_VPC_K8S_CNI_VETHPREFIX": "eth", "IP_COOLDOWN_PERIOD": "-3",
		"NETWORK_POLICY_ENFORCING_MODE": "loose", "AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG": "true", "AWS_EC2_ENDPOINT": "ec2.example", "CLUSTER_ENDPOINT": "http://api",
		"ADD_WAIT_TIMEOUT": "90s",
		// stdout would mix the log into the result the runtime reads;
		// aws-node refuses it too.
		"AWS_VPC_K8S_PLUGIN_LOG_FILE": "stdout",
	}))
	if err == nil {
		t.Fatal("bad environment accepted")
	}
	for _, name := range []string{"AWS_VPC_ENI_MTU", "POD_MTU", "AWS_VPC_K8S_CNI_VETHPREFIX", "IP_COOLDOWN_PERIOD", "NETWORK_POLICY_ENFORCING_MODE", "MY_NODE_NAME", "AWS_EC2_ENDPOINT", "CLUSTER_ENDPOINT", "ADD_WAIT_TIMEOUT", "AWS_VPC_K8S_PLUGIN_LOG_FILE"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error does not name %s: %v", name, err)
		}
	}
}

// TestUnsupportedModesStop: an aws-node manifest asking for a mode berth
// does not have (IPv6 pods, security groups for pods, multi-NIC pods)
// stops ipamd with the reason; the values that keep the mode off are
// accepted. IPv6 egress only warns, as aws-node does on a node without
// IPv6.
func TestUnsupportedModesStop(t *testing.T) {
	var logged bytes.Buffer
	if _, err := Load(env(map[string]string{"ENABLE_V6_EGRESS": "true"}), slog.New(slog.NewTextHandler(&logged, nil))); err != nil ||
		!strings.Contains(logged.String(), "ENABLE_V6_EGRESS") {
		t.Errorf("ENABLE_V6_EGRESS=true: %v, logged %q; want a warning only", err, logged.String())
	}
	for name, on := range map[string]string{"ENABLE_IPv6": "true", "ENABLE_IPv4": "false", "ENABLE_POD_ENI": "true"} {
		_, err := FromEnv(env(map[string]string{name: on}))
		if err == nil || !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), "not supported") && !strings.Contains(err.Error(), "IPv4 addresses only") {
			t.Errorf("%s=%s: %v", name, on, err)
		}
	}
	if _, err := FromEnv(env(map[string]string{"ENABLE_IPv6": "false", "ENABLE_IPv4": "true", "ENABLE_POD_ENI": "false", "ENABLE_MULTI_NIC": "false", "ENABLE_V6_EGRESS": "false"})); err != nil {
		t.Fatalf("aws-node's defaults refused: %v", err)
	}
}

// TestLenientLikeVPCCNI: values the VPC CNI logs and skips (or replaces by
// the default) do not stop ipamd; each is skipped the same way, with a
// warning naming the variable and the value.
func TestLenientLikeVPCCNI(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		warn []string // what the warning must contain; nil: no warning
		ok   func(Config) bool
	}{
		{map[string]string{"AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS": "10.1.0.0/16,"}, []string{"AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS"},
			func(c Config) bool { return fmt.Sprint(c.ExcludeSNATCIDRs) == "[10.1.0.0/16]" }},
		{map[string]string{"AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS": "10.1.0.0/16, fd00::/8"}, []string{"AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS", "fd00::/8"},
			func(c Config) bool { return fmt.Sprint(c.ExcludeSNATCIDRs) == "[10.1.0.0/16]" }},
		{map[string]string{"AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS": "nope,192.168.1.7/24"}, []string{"AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS", "nope"},
			func(c Config) bool { return fmt.Sprint(c.ExcludeSNATCIDRs) == "[192.168.1.0/24]" }},
		{map[string]string{"ADDITIONAL_ENI_TAGS": `{"k8s.amazonaws.com/foo":"x","team":"a","node.k8s.amazonaws.com/instance_id":"i-1"}`},
			[]string{"ADDITIONAL_ENI_TAGS", "k8s.amazonaws.com/foo"},
			func(c Config) bool { return fmt.Sprint(c.AdditionalENITags) == "map[team:a]" }},
		{map[string]string{"ADDITIONAL_ENI_TAGS": `not json`}, []string{"ADDITIONAL_ENI_TAGS", "not json"},
			func(c Config) bool { return c.AdditionalENITags == nil }},
		{map[string]string{"ADDITIONAL_ENI_TAGS": `{"team":"a","n":1}`}, []string{"ADDITIONAL_ENI_TAGS"},
			func(c Config) bool { return c.AdditionalENITags == nil }},
		{map[string]string{"MAX_ENI": "0"}, []string{"MAX_ENI", "0"}, func(c Config) bool { return c.MaxENI == -1 }},
		{map[string]string{"MAX_ENI": "-5"}, []string{"MAX_ENI", "-5"}, func(c Config) bool { return c.MaxENI == -1 }},
		{map[string]string{"MAX_ENI": "3"}, nil, func(c Config) bool { return c.MaxENI == 3 }},
		{map[string]string{"WARM_ENI_TARGET": "-1"}, []string{"WARM_ENI_TARGET", "-1"}, func(c Config) bool { return c.WarmENITarget == 1 }},
		{map[string]string{"WARM_ENI_TARGET": "x"}, []string{"WARM_ENI_TARGET", "x"}, func(c Config) bool { return c.WarmENITarget == 1 }},
		{map[string]string{"WARM_ENI_TARGET": "0"}, nil, func(c Config) bool { return c.WarmENITarget == 0 }},
		{map[string]string{"WARM_IP_TARGET": "-2", "MINIMUM_IP_TARGET": "lots"}, []string{"WARM_IP_TARGET", "MINIMUM_IP_TARGET", "lots"},
			func(c Config) bool { return c.WarmIPTarget == 0 && c.MinimumIPTarget == 0 }},
		{map[string]string{"ENABLE_PREFIX_DELEGATION": "true", "WARM_PREFIX_TARGET": "-1"}, []string{"WARM_PREFIX_TARGET"},
			func(c Config) bool { return c.WarmPrefixTarget == 1 }},
		{map[string]string{"WARM_IP_TARGET": ""}, nil, func(c Config) bool { return c.WarmIPTarget == 0 }},
		{map[string]string{"AWS_VPC_K8S_CNI_EXTERNALSNAT": "yes"}, []string{"AWS_VPC_K8S_CNI_EXTERNALSNAT", "yes"},
			func(c Config) bool { return !c.ExternalSNAT }},
		{map[string]string{"AWS_VPC_K8S_CNI_EXTERNALSNAT": "1"}, nil, func(c Config) bool { return c.ExternalSNAT }},
		{map[string]string{"ENABLE_SUBNET_DISCOVERY": "nah"}, []string{"ENABLE_SUBNET_DISCOVERY", "nah"}, func(c Config) bool { return c.SubnetDiscovery }},
		{map[string]string{"ENABLE_MULTI_NIC": "TRUE"}, nil, func(c Config) bool { return c.MultiNIC }},
		{map[string]string{"ENABLE_MULTI_NIC": "both"}, []string{"ENABLE_MULTI_NIC", "both"}, func(c Config) bool { return !c.MultiNIC }},
		{map[string]string{"ENABLE_PREFIX_DELEGATION": "on", "DISABLE_LEAKED_ENI_CLEANUP": "off"}, []string{"ENABLE_PREFIX_DELEGATION", "DISABLE_LEAKED_ENI_CLEANUP"},
			func(c Config) bool { return !c.PrefixDelegation && !c.DisableLeakedENICleanup }},
		{map[string]string{"AWS_VPC_K8S_CNI_RANDOMIZESNAT": "fully"}, []string{"AWS_VPC_K8S_CNI_RANDOMIZESNAT", "fully"},
			func(c Config) bool { return c.RandomizeSNAT == "prng" }},
		{map[string]string{"NETWORK_POLICY_ENFORCING_MODE": "none"}, nil, func(c Config) bool { return c.NetworkPolicyMode == "" }},
		{nil, nil, func(c Config) bool {
			return c.PluginLogFile == "/var/log/aws-routed-eni/plugin.log" && c.PluginLogLevel == "Debug" && !c.BandwidthPlugin && !c.DisablePodV6
		}},
		{map[string]string{"AWS_VPC_K8S_PLUGIN_LOG_FILE": "stderr", "AWS_VPC_K8S_PLUGIN_LOG_LEVEL": "INFO", "ENABLE_BANDWIDTH_PLUGIN": "true", "DISABLE_POD_V6": "true"}, nil,
			func(c Config) bool {
				return c.PluginLogFile == "stderr" && c.PluginLogLevel == "INFO" && c.BandwidthPlugin && c.DisablePodV6
			}},
		{map[string]string{"AWS_VPC_K8S_PLUGIN_LOG_LEVEL": "chatty"}, []string{"AWS_VPC_K8S_PLUGIN_LOG_LEVEL", "chatty"},
			func(c Config) bool { return c.PluginLogLevel == DefaultPluginLogLevel }},
		{map[string]string{"AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG": "true", "MY_NODE_NAME": "ip-10-0-1-10"}, nil, func(c Config) bool {
			return c.CustomNetworking && c.NodeName == "ip-10-0-1-10" && c.ENIConfigAnnotationDef == "k8s.amazonaws.com/eniConfig" && c.ENIConfigLabelDef == "k8s.amazonaws.com/eniConfig"
		}},
		{map[string]string{"AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG": "true", "MY_NODE_NAME": "n", "ENI_CONFIG_LABEL_DEF": "topology.kubernetes.io/zone"}, nil,
			func(c Config) bool { return c.ENIConfigLabelDef == "topology.kubernetes.io/zone" }},
		{map[string]string{"AWS_VPC_K8S_PLUGIN_LOG_FILE": "plugin.log"}, []string{"AWS_VPC_K8S_PLUGIN_LOG_FILE"},
			func(c Config) bool { return c.PluginLogFile == DefaultPluginLogFile }},
	} {
		t.Run(fmt.Sprint(tc.env), func(t *testing.T) {
			var logs bytes.Buffer
			c, err := Load(env(tc.env), slog.New(slog.NewTextHandler(&logs, nil)))
			if err != nil {
				t.Fatalf("refused to start: %v", err)
			}
			if !tc.ok(c) {
				t.Errorf("parsed as %+v", c)
			}
			if tc.warn == nil && logs.Len() > 0 {
				t.Errorf("unexpected warning: %s", logs.String())
			}
			if tc.warn != nil && !strings.Contains(logs.String(), "level=WARN") {
				t.Errorf("no warning logged: %q", logs.String())
			}
			for _, w := range tc.warn {
				if !strings.Contains(logs.String(), w) {
					t.Errorf("warning does not name %q: %s", w, logs.String())
				}
			}
		})
	}
}

// TestPodMTU: POD_MTU is the pod veth's MTU and defaults to AWS_VPC_ENI_MTU,
// which stays the ENIs' MTU.
func TestPodMTU(t *testing.T) {
	for _, tc := range []struct {
		env         map[string]string
		eni, pod    int
		wantFailure bool
	}{
		{nil, 9001, 9001, false},
		{map[string]string{"AWS_VPC_ENI_MTU": "1500"}, 1500, 1500, false},
		{map[string]string{"POD_MTU": "1400"}, 9001, 1400, false},
		{map[string]string{"AWS_VPC_ENI_MTU": "1500", "POD_MTU": "8000"}, 1500, 8000, false},
		{map[string]string{"POD_MTU": "9216"}, 0, 0, true},
		{map[string]string{"POD_MTU": "jumbo"}, 0, 0, true},
	} {
		c, err := FromEnv(env(tc.env))
		if tc.wantFailure {
			if err == nil || !strings.Contains(err.Error(), "POD_MTU") {
				t.Errorf("%v: error %v, want one naming POD_MTU", tc.env, err)
			}
			continue
		}
		if err != nil || c.MTU != tc.eni || c.PodMTU != tc.pod {
			t.Errorf("%v: ENI MTU %d, pod MTU %d, err %v; want %d, %d", tc.env, c.MTU, c.PodMTU, err, tc.eni, tc.pod)
		}
	}
}

// TestConnMark: AWS_VPC_K8S_CNI_CONNMARK in any Go base; out of range or
// unparseable keeps 0x80, as the VPC CNI does.
func TestConnMark(t *testing.T) {
	for v, want := range map[string]uint32{"": 0x80, "0x2000": 0x2000, "4096": 4096, "0o20000": 0x2000, "0": 0x80, "-1": 0x80,
		"0x100000000": 0x80, "mark": 0x80, "0xffffffff": 0xffffffff} {
		c, err := FromEnv(env(map[string]string{"AWS_VPC_K8S_CNI_CONNMARK": v}))
		if err != nil || c.ConnMark != want {
			t.Errorf("AWS_VPC_K8S_CNI_CONNMARK=%q: %#x, %v; want %#x", v, c.ConnMark, err, want)
		}
	}
}

// TestRandomizeSNAT: the three modes of the VPC CNI; prng by default.
func TestRandomizeSNAT(t *testing.T) {
	for v, want := range map[string]string{"": "prng", "prng": "prng", "hashrandom": "hashrandom", "none": "none", "bogus": "prng"} {
		c, err := FromEnv(env(map[string]string{"AWS_VPC_K8S_CNI_RANDOMIZESNAT": v}))
		if err != nil || c.RandomizeSNAT != want {
			t.Errorf("AWS_VPC_K8S_CNI_RANDOMIZESNAT=%q: %q, %v; want %q", v, c.RandomizeSNAT, err, want)
		}
	}
}

// AWS_VPC_CNI_NODE_PORT_SUPPORT defaults to true and parses as the VPC
// CNI's booleans; AWS_EXTERNAL_SERVICE_CIDRS skips what is not IPv4.
func TestNodePortSupportAndExternalServiceCIDRs(t *testing.T) {
	c, err := FromEnv(func(string) string { return "" })
	if err != nil || !c.NodePortSupport || len(c.ExternalServiceCIDRs) != 0 {
		t.Fatalf("defaults: %+v %v", c, err)
	}
	env := map[string]string{"AWS_VPC_CNI_NODE_PORT_SUPPORT": "false", "AWS_EXTERNAL_SERVICE_CIDRS": "198.51.100.0/24,fd00::/8,,bogus,192.0.2.0/25"}
	c, err = FromEnv(func(k string) string { return env[k] })
	if err != nil || c.NodePortSupport || fmt.Sprint(c.ExternalServiceCIDRs) != "[198.51.100.0/24 192.0.2.0/25]" {
		t.Fatalf("got NodePortSupport %v, ExternalServiceCIDRs %v, %v", c.NodePortSupport, c.ExternalServiceCIDRs, err)
	}
}

// HTTP_TIMEOUT: whole seconds, at least 10, as aws-node reads it; anything
// else keeps the 10 s default with a warning.
func TestHTTPTimeout(t *testing.T) {
	for v, want := range map[string]time.Duration{"": 10 * time.Second, "30": 30 * time.Second, "5": 10 * time.Second, "ten": 10 * time.Second} {
		var logged bytes.Buffer
		c, err := Load(env(map[string]string{"HTTP_TIMEOUT": v}), slog.New(slog.NewTextHandler(&logged, nil)))
		if err != nil || c.HTTPTimeout != want {
			t.Errorf("HTTP_TIMEOUT=%q: %v %v, want %v", v, c.HTTPTimeout, err, want)
		}
		if warned := strings.Contains(logged.String(), "HTTP_TIMEOUT"); warned != (v == "5" || v == "ten") {
			t.Errorf("HTTP_TIMEOUT=%q: warning %v", v, warned)
		}
	}
}
