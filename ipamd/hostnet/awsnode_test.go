package hostnet

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/berth-io/berth/internal/testenv"
)

// inNSExec runs a command in ns and fails the test on error.
func inNSExec(t *testing.T, ns netns.NsHandle, args ...string) string {
	t.Helper()
	cmd := exec.Command("nsenter", append([]string{fmt.Sprintf("--net=/proc/%d/fd/%d", os.Getpid(), int(ns))}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// A node taken over from aws-node: its SNAT and connmark rules, as the
// VPC CNI v1.23 writes them with iptables-nft and its nftables connmark
// backend, go when ipamd sets the primary interface up. Left, they would
// SNAT by aws-node's settings (here: a CIDR berth excludes, and SNAT at
// all when berth's is external). kube-proxy's rules in the same tables
// stay.
func TestSetupPrimaryRemovesTheVPCCNIRules(t *testing.T) {
	testenv.RequireRoot(t, "netns, nftables, iptables-nft")
	for _, tool := range []string{"iptables-nft", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Require(t, false, tool+" (package iptables / nftables) to write the VPC CNI's rules")
		}
	}
	primaryMAC := mustMAC(t, "02:00:00:00:00:07")
	nodeNS, node := newNS(t)
	vpcNS, vpc := newNS(t)
	addVeth(t, node, "ens5", primaryMAC, "vpc0", vpcNS, vpc)

	ipt := func(args ...string) { inNSExec(t, nodeNS, append([]string{"iptables-nft"}, args...)...) }
	// aws-node's SNAT chain and the jump to it.
	ipt("-t", "nat", "-N", "AWS-SNAT-CHAIN-0")
	ipt("-t", "nat", "-A", "POSTROUTING", "-m", "comment", "--comment", "AWS SNAT CHAIN", "-j", "AWS-SNAT-CHAIN-0")
	ipt("-t", "nat", "-A", "AWS-SNAT-CHAIN-0", "-d", "10.0.0.0/16", "-m", "comment", "--comment", "AWS SNAT CHAIN", "-j", "RETURN")
	ipt("-t", "nat", "-A", "AWS-SNAT-CHAIN-0", "!", "-o", "vlan+", "-m", "comment", "--comment", "AWS, SNAT",
		"-m", "addrtype", "!", "--dst-type", "LOCAL", "-j", "SNAT", "--to-source", "10.0.1.10", "--random-fully")
	// A stale chain of an older version, and the iptables connmark backend.
	ipt("-t", "nat", "-N", "AWS-SNAT-CHAIN-1")
	ipt("-t", "nat", "-N", "AWS-CONNMARK-CHAIN-0")
	ipt("-t", "nat", "-A", "PREROUTING", "-i", "eni+", "-m", "comment", "--comment", "AWS, outbound connections", "-j", "AWS-CONNMARK-CHAIN-0")
	ipt("-t", "nat", "-A", "AWS-CONNMARK-CHAIN-0", "-m", "comment", "--comment", "AWS, CONNMARK", "-j", "CONNMARK", "--set-xmark", "0x80/0x80")
	ipt("-t", "nat", "-A", "PREROUTING", "-m", "comment", "--comment", "AWS, CONNMARK", "-j", "CONNMARK", "--restore-mark", "--mask", "0x80")
	// Its NodePort rules in mangle.
	ipt("-t", "mangle", "-A", "PREROUTING", "-m", "comment", "--comment", "AWS, primary ENI", "-i", "ens5",
		"-m", "addrtype", "--dst-type", "LOCAL", "--limit-iface-in", "-j", "CONNMARK", "--set-mark", "0x80/0x80")
	ipt("-t", "mangle", "-A", "PREROUTING", "-m", "comment", "--comment", "AWS, primary ENI", "-i", "eni+",
		"-j", "CONNMARK", "--restore-mark", "--mask", "0x80")
	// kube-proxy's, which must stay.
	ipt("-t", "nat", "-N", "KUBE-SERVICES")
	ipt("-t", "nat", "-A", "PREROUTING", "-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES")
	ipt("-t", "nat", "-A", "POSTROUTING", "-m", "comment", "--comment", "kubernetes postrouting rules", "-j", "MASQUERADE")
	ipt("-t", "mangle", "-A", "PREROUTING", "-i", "ens5", "-j", "MARK", "--set-mark", "0x4000")
	// The nftables connmark backend's table.
	inNSExec(t, nodeNS, "nft", "add table ip aws-cni; add chain ip aws-cni nat-prerouting { type filter hook prerouting priority -90; }")

	h := newHost(t, Config{NetNS: nodeNS, VPCCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/16")}, ExternalSNAT: true})
	for i := range 2 { // idempotent: nothing left to remove the second time
		if err := h.SetupPrimary(t.Context(), primaryMAC, netip.MustParseAddr("10.0.1.10")); err != nil {
			t.Fatalf("SetupPrimary #%d: %v", i+1, err)
		}
	}
	ruleset := inNSExec(t, nodeNS, "nft", "list", "ruleset")
	saved := inNSExec(t, nodeNS, "iptables-nft-save")
	t.Logf("after:\n%s\n%s", ruleset, saved)
	for _, gone := range []string{"AWS-SNAT-CHAIN", "AWS-CONNMARK-CHAIN", "AWS, ", "AWS SNAT", "0x80/0x80", "--restore-mark"} {
		if strings.Contains(saved, gone) {
			t.Errorf("left in iptables: %q", gone)
		}
	}
	if strings.Contains(ruleset, "table ip aws-cni") {
		t.Error("table ip aws-cni left")
	}
	for _, kept := range []string{":KUBE-SERVICES", "kubernetes service portals", "-j KUBE-SERVICES", "-j MASQUERADE", "MARK --set-xmark 0x4000"} {
		if !strings.Contains(saved, kept) {
			t.Errorf("kube-proxy's %q is gone", kept)
		}
	}
	if !strings.Contains(ruleset, "table ip "+SNATTable) {
		t.Error("berth's table missing")
	}
}

// Pods keep the veths they were made with when AWS_VPC_K8S_CNI_VETHPREFIX
// changes: their new connections leaving the VPC are still marked (and so
// SNATed) until they are re-created.
func TestSetupPrimaryMarksPodsOfEarlierVethPrefixes(t *testing.T) {
	testenv.RequireRoot(t, "netns, netlink, nftables")
	primaryMAC := mustMAC(t, "02:00:00:00:00:08")
	nodeNS, node := newNS(t)
	vpcNS, vpc := newNS(t)
	addVeth(t, node, "ens5", primaryMAC, "vpc0", vpcNS, vpc)
	for _, name := range []string{"pod0d7763386da", "eni1d7763386da", "lxcabc"} {
		if err := node.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: "p" + name[:4]}); err != nil {
			t.Fatalf("veth %s: %v", name, err)
		}
	}
	h := newHost(t, Config{NetNS: nodeNS, VPCCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/16")}})
	if err := h.SetupPrimary(t.Context(), primaryMAC, netip.MustParseAddr("10.0.1.10")); err != nil {
		t.Fatal(err)
	}
	text := inNSExec(t, nodeNS, "nft", "list", "table", "ip", SNATTable)
	for _, want := range []string{`iifname "eni*"`, `iifname "pod*"`} {
		if strings.Count(text, want) != 1 {
			t.Errorf("%d rules with %s:\n%s", strings.Count(text, want), want, text)
		}
	}
	if strings.Contains(text, `"lxca*"`) || strings.Contains(text, `"peni*"`) {
		t.Errorf("a veth that is no pod's got a rule:\n%s", text)
	}
}
