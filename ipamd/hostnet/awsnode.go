package hostnet

import (
	"errors"
	"fmt"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/google/nftables/xt"
	"golang.org/x/sys/unix"
)

// What the Amazon VPC CNI (aws-node, v1.23) leaves in a node's namespace
// for IPv4, and berth replaces when it takes a running node over:
//
//   - table ip aws-cni: its nftables connmark backend;
//   - in iptables' nat table: the chains AWS-SNAT-CHAIN-<n> and
//     AWS-CONNMARK-CHAIN-<n>, the jumps to them, and the connmark restore
//     in PREROUTING (comment "AWS, CONNMARK");
//   - in iptables' mangle table, PREROUTING: the NodePort connmark and its
//     restore (comment "AWS, primary ENI").
//
// Left in place they SNAT and mark by aws-node's last settings, not
// berth's: with AWS_VPC_K8S_CNI_EXTERNALSNAT=true in berth, aws-node's chain
// would still rewrite the pods' traffic, and a CIDR excluded in berth would
// still be SNATed. The iptables rules are reached through nftables, where
// iptables-nft (the iptables of Amazon Linux 2023, Bottlerocket and
// current Debian) keeps them; rules made with iptables-legacy are not seen.
const (
	vpcCNITable         = "aws-cni"
	vpcCNISNATChain     = "AWS-SNAT-CHAIN-"
	vpcCNIConnmarkChain = "AWS-CONNMARK-CHAIN-"
)

// vpcCNIComments are the comments of the VPC CNI's rules in built-in
// chains (the ones that are not jumps to its own chains).
var vpcCNIComments = map[string]bool{"AWS, CONNMARK": true, "AWS, primary ENI": true}

func isVPCCNIChain(name string) bool {
	return strings.HasPrefix(name, vpcCNISNATChain) || strings.HasPrefix(name, vpcCNIConnmarkChain)
}

// ruleComment is a rule's comment, whether nft's (rule user data) or
// iptables-nft's (an xt "comment" match).
func ruleComment(r *nftables.Rule) string {
	if c, ok := userdata.GetString(r.UserData, userdata.TypeComment); ok {
		return c
	}
	for _, e := range r.Exprs {
		if m, ok := e.(*expr.Match); ok && m.Name == "comment" {
			if c, ok := m.Info.(*xt.Comment); ok {
				return string(*c)
			}
		}
	}
	return ""
}

// jumpsToVPCCNI reports whether r jumps (or goes) to one of the VPC CNI's
// chains.
func jumpsToVPCCNI(r *nftables.Rule) bool {
	for _, e := range r.Exprs {
		if v, ok := e.(*expr.Verdict); ok && (v.Kind == expr.VerdictJump || v.Kind == expr.VerdictGoto) && isVPCCNIChain(v.Chain) {
			return true
		}
	}
	return false
}

// removeVPCCNIRules removes the VPC CNI's host rules (see above) in one
// transaction, and reports what it removed. Nothing of anyone else's is
// touched: kube-proxy's chains in the same tables stay.
func (h *Host) removeVPCCNIRules() ([]string, error) {
	c, err := h.nftConn()
	if err != nil {
		return nil, err
	}
	var removed []string
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return nil, fmt.Errorf("list nftables tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == vpcCNITable {
			c.DelTable(t)
			removed = append(removed, "table ip "+vpcCNITable)
		}
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return nil, fmt.Errorf("list nftables chains: %w", err)
	}
	var own []*nftables.Chain
	for _, ch := range chains {
		if ch.Table.Name != "nat" && ch.Table.Name != "mangle" {
			continue
		}
		if ch.Table.Name == "nat" && isVPCCNIChain(ch.Name) {
			own = append(own, ch)
			continue
		}
		rules, err := c.GetRules(ch.Table, ch)
		if errors.Is(err, unix.ENOENT) {
			continue // gone meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("list rules of %s %s: %w", ch.Table.Name, ch.Name, err)
		}
		for _, r := range rules {
			if jumpsToVPCCNI(r) || vpcCNIComments[ruleComment(r)] {
				if err := c.DelRule(r); err != nil {
					return nil, fmt.Errorf("queue removal of a rule in %s %s: %w", ch.Table.Name, ch.Name, err)
				}
				removed = append(removed, fmt.Sprintf("rule %d in %s %s (%q)", r.Handle, ch.Table.Name, ch.Name, ruleComment(r)))
			}
		}
	}
	// The chains go after the jumps to them, in the same batch.
	for _, ch := range own {
		c.FlushChain(ch)
		c.DelChain(ch)
		removed = append(removed, "chain nat "+ch.Name)
	}
	if len(removed) == 0 {
		return nil, nil
	}
	if err := c.Flush(); err != nil {
		return nil, fmt.Errorf("remove the VPC CNI's rules: %w", err)
	}
	return removed, nil
}
