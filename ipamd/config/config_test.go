package config

import (
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

func TestAllErrorsReported(t *testing.T) {
	_, err := FromEnv(env(map[string]string{
		"WARM_ENI_TARGET": "x", "MAX_ENI": "0", "AWS_VPC_ENI_MTU": "10000", "AWS_VPC_K8S_CNI_VETHPREFIX": "eth",
		"AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS": "nope", "ADDITIONAL_ENI_TAGS": "[1]", "IP_COOLDOWN_PERIOD": "-3",
	}))
	if err == nil {
		t.Fatal("bad environment accepted")
	}
	for _, name := range []string{"WARM_ENI_TARGET", "MAX_ENI", "AWS_VPC_ENI_MTU", "AWS_VPC_K8S_CNI_VETHPREFIX", "EXCLUDE_SNAT_CIDRS", "ADDITIONAL_ENI_TAGS", "IP_COOLDOWN_PERIOD"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error does not name %s: %v", name, err)
		}
	}
}
