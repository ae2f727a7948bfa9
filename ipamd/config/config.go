// Package config reads ipamd's settings from the environment, with the
// names and meanings of the Amazon VPC CNI's aws-node DaemonSet, so
// existing manifests keep working. Validate reports every problem at once.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"
)

// Config is ipamd's configuration.
type Config struct {
	WarmENITarget           int // WARM_ENI_TARGET, default 1
	WarmIPTarget            int // WARM_IP_TARGET, 0 = unset
	MinimumIPTarget         int // MINIMUM_IP_TARGET, 0 = unset
	WarmPrefixTarget        int // WARM_PREFIX_TARGET, default 1 with prefix delegation
	PrefixDelegation        bool
	MaxENI                  int // MAX_ENI, -1 = the instance type's limit
	IPCooldown              time.Duration
	ExternalSNAT            bool
	ExcludeSNATCIDRs        []netip.Prefix
	RandomizeSNAT           bool // AWS_VPC_K8S_CNI_RANDOMIZESNAT != "none"
	MTU                     int
	VethPrefix              string
	DisableLeakedENICleanup bool
	SubnetDiscovery         bool // ENABLE_SUBNET_DISCOVERY, default true
	AdditionalENITags       map[string]string
	// MaxPods overrides the computed max pods (berth: MAX_PODS).
	MaxPods int
	// AddWait is how long AddNetwork waits for an address (berth: ADD_WAIT_TIMEOUT, default 30s).
	AddWait time.Duration
	// NetworkPolicyMode is told to the plugin (NETWORK_POLICY_ENFORCING_MODE);
	// empty when unset, which tells a VPC CNI plugin there is no policy agent.
	NetworkPolicyMode string
}

// Getenv is how the environment is read (os.Getenv in production).
type Getenv func(string) string

// FromEnv parses the environment. It returns every problem found.
func FromEnv(get Getenv) (Config, error) {
	if get == nil {
		get = os.Getenv
	}
	c := Config{WarmENITarget: 1, MaxENI: -1, IPCooldown: 30 * time.Second, RandomizeSNAT: true, MTU: 9001,
		VethPrefix: "eni", SubnetDiscovery: true, AddWait: 30 * time.Second}
	var errs []error
	intVar := func(name string, dst *int, min int) {
		v := strings.TrimSpace(get(name))
		if v == "" {
			return
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < min {
			errs = append(errs, fmt.Errorf("%s=%q: want an integer >= %d", name, v, min))
			return
		}
		*dst = n
	}
	boolVar := func(name string, dst *bool) {
		v := strings.TrimSpace(get(name))
		if v == "" {
			return
		}
		b, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: want true or false", name, v))
			return
		}
		*dst = b
	}
	durVar := func(name string, dst *time.Duration, seconds bool) {
		v := strings.TrimSpace(get(name))
		if v == "" {
			return
		}
		if seconds {
			if n, err := strconv.Atoi(v); err == nil && n >= 0 {
				*dst = time.Duration(n) * time.Second
				return
			}
		}
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			errs = append(errs, fmt.Errorf("%s=%q: want seconds or a duration", name, v))
			return
		}
		*dst = d
	}
	intVar("WARM_ENI_TARGET", &c.WarmENITarget, 0)
	intVar("WARM_IP_TARGET", &c.WarmIPTarget, 0)
	intVar("MINIMUM_IP_TARGET", &c.MinimumIPTarget, 0)
	boolVar("ENABLE_PREFIX_DELEGATION", &c.PrefixDelegation)
	if c.PrefixDelegation {
		c.WarmPrefixTarget = 1
	}
	intVar("WARM_PREFIX_TARGET", &c.WarmPrefixTarget, 0)
	intVar("MAX_ENI", &c.MaxENI, -1)
	if c.MaxENI == 0 {
		errs = append(errs, errors.New("MAX_ENI=0: a node needs at least its primary ENI"))
	}
	durVar("IP_COOLDOWN_PERIOD", &c.IPCooldown, true)
	boolVar("AWS_VPC_K8S_CNI_EXTERNALSNAT", &c.ExternalSNAT)
	if v := strings.TrimSpace(get("AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS")); v != "" {
		for _, s := range strings.Split(v, ",") {
			p, err := netip.ParsePrefix(strings.TrimSpace(s))
			if err != nil || !p.Addr().Is4() {
				errs = append(errs, fmt.Errorf("AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS: %q is not an IPv4 CIDR", s))
				continue
			}
			c.ExcludeSNATCIDRs = append(c.ExcludeSNATCIDRs, p.Masked())
		}
	}
	switch v := strings.TrimSpace(get("AWS_VPC_K8S_CNI_RANDOMIZESNAT")); v {
	case "", "prng", "hashrandom":
	case "none":
		c.RandomizeSNAT = false
	default:
		errs = append(errs, fmt.Errorf("AWS_VPC_K8S_CNI_RANDOMIZESNAT=%q: want prng, hashrandom or none", v))
	}
	intVar("AWS_VPC_ENI_MTU", &c.MTU, 576)
	if c.MTU > 9001 {
		errs = append(errs, fmt.Errorf("AWS_VPC_ENI_MTU=%d: at most 9001", c.MTU))
	}
	if v := strings.TrimSpace(get("AWS_VPC_K8S_CNI_VETHPREFIX")); v != "" {
		if len(v) > 4 || v == "eth" || v == "lo" || v == "vlan" {
			errs = append(errs, fmt.Errorf("AWS_VPC_K8S_CNI_VETHPREFIX=%q: at most 4 characters and not eth, lo or vlan", v))
		} else {
			c.VethPrefix = v
		}
	}
	boolVar("DISABLE_LEAKED_ENI_CLEANUP", &c.DisableLeakedENICleanup)
	boolVar("ENABLE_SUBNET_DISCOVERY", &c.SubnetDiscovery)
	if v := strings.TrimSpace(get("ADDITIONAL_ENI_TAGS")); v != "" {
		if err := json.Unmarshal([]byte(v), &c.AdditionalENITags); err != nil {
			errs = append(errs, fmt.Errorf("ADDITIONAL_ENI_TAGS: want a JSON object of strings: %v", err))
		}
		for k := range c.AdditionalENITags {
			if strings.HasPrefix(k, "k8s.amazonaws.com") || strings.HasPrefix(k, "node.k8s.amazonaws.com") {
				errs = append(errs, fmt.Errorf("ADDITIONAL_ENI_TAGS: key %q is reserved", k))
			}
		}
	}
	intVar("MAX_PODS", &c.MaxPods, 0)
	durVar("ADD_WAIT_TIMEOUT", &c.AddWait, true)
	if v := strings.TrimSpace(get("NETWORK_POLICY_ENFORCING_MODE")); v != "" {
		if v != "standard" && v != "strict" {
			errs = append(errs, fmt.Errorf("NETWORK_POLICY_ENFORCING_MODE=%q: want standard or strict", v))
		} else {
			c.NetworkPolicyMode = v
		}
	}
	return c, errors.Join(errs...)
}

// Env returns the settings as the introspection endpoint shows them.
func (c Config) Env() map[string]string {
	cidrs := make([]string, len(c.ExcludeSNATCIDRs))
	for i, p := range c.ExcludeSNATCIDRs {
		cidrs[i] = p.String()
	}
	return map[string]string{
		"WARM_ENI_TARGET":                    strconv.Itoa(c.WarmENITarget),
		"WARM_IP_TARGET":                     strconv.Itoa(c.WarmIPTarget),
		"MINIMUM_IP_TARGET":                  strconv.Itoa(c.MinimumIPTarget),
		"WARM_PREFIX_TARGET":                 strconv.Itoa(c.WarmPrefixTarget),
		"ENABLE_PREFIX_DELEGATION":           strconv.FormatBool(c.PrefixDelegation),
		"MAX_ENI":                            strconv.Itoa(c.MaxENI),
		"IP_COOLDOWN_PERIOD":                 strconv.Itoa(int(c.IPCooldown / time.Second)),
		"AWS_VPC_K8S_CNI_EXTERNALSNAT":       strconv.FormatBool(c.ExternalSNAT),
		"AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS": strings.Join(cidrs, ","),
		"AWS_VPC_ENI_MTU":                    strconv.Itoa(c.MTU),
		"AWS_VPC_K8S_CNI_VETHPREFIX":         c.VethPrefix,
		"DISABLE_LEAKED_ENI_CLEANUP":         strconv.FormatBool(c.DisableLeakedENICleanup),
		"ENABLE_SUBNET_DISCOVERY":            strconv.FormatBool(c.SubnetDiscovery),
		"MAX_PODS":                           strconv.Itoa(c.MaxPods),
		"ADD_WAIT_TIMEOUT":                   c.AddWait.String(),
	}
}
