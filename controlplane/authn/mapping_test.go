package authn

import (
	"context"
	"errors"
	"slices"
	"testing"
)

type entries map[string]Entry

func (e entries) AccessEntry(arn string) (Entry, bool) { v, ok := e[arn]; return v, ok }

func TestCanonicalize(t *testing.T) {
	cases := map[string]string{
		"arn:aws:sts::111122223333:assumed-role/Admin/alice@example.com": "arn:aws:iam::111122223333:role/Admin",
		"arn:aws:iam::111122223333:user/dev/bob":                         "arn:aws:iam::111122223333:user/dev/bob",
		"arn:aws:iam::111122223333:root":                                 "arn:aws:iam::111122223333:root",
		"arn:aws-cn:sts::111122223333:assumed-role/R/i-0abc":             "arn:aws-cn:iam::111122223333:role/R",
	}
	for in, want := range cases {
		id, err := canonicalize(in)
		if err != nil || id.CanonicalARN != want {
			t.Errorf("canonicalize(%s) = %+v, %v; want %s", in, id, err, want)
		}
	}
	for _, bad := range []string{"", "arn:aws:sts::1:assumed-role/R", "arn:aws:s3:::bucket", "not-an-arn"} {
		if _, err := canonicalize(bad); err == nil {
			t.Errorf("canonicalize(%q) accepted", bad)
		}
	}
}

func TestParseAWSAuth(t *testing.T) {
	a, err := ParseAWSAuth(map[string]string{
		"mapRoles": "- rolearn: arn:aws:iam::111122223333:role/path/NodeRole\n  username: system:node:{{EC2PrivateDNSName}}\n  groups: [system:bootstrappers, system:nodes]\n",
		"mapUsers": "- userarn: arn:aws:iam::111122223333:user/ops\n  username: ops\n  groups: [viewers]\n",
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Roles) != 1 || len(a.Users) != 1 {
		t.Fatalf("%+v", a)
	}
	if _, err := ParseAWSAuth(map[string]string{"mapRoles": "- username: x\n"}); err == nil {
		t.Fatal("entry without rolearn accepted")
	}
	if _, err := ParseAWSAuth(map[string]string{"mapRoles": "- rolearn: a\n  usrname: typo\n"}); err == nil {
		t.Fatal("unknown field accepted")
	}
}

func TestMappingOrderAndTemplates(t *testing.T) {
	auth, _ := ParseAWSAuth(map[string]string{
		"mapRoles": "- rolearn: arn:aws:iam::111122223333:role/path/NodeRole\n  username: system:node:{{EC2PrivateDNSName}}\n  groups: [system:nodes]\n" +
			"- rolearn: arn:aws:iam::111122223333:role/Dev\n  username: dev:{{SessionName}}\n  groups: [\"devs-{{AccountID}}\"]\n",
	})
	ents := entries{"arn:aws:iam::111122223333:role/Dev": {PrincipalARN: "arn:aws:iam::111122223333:role/Dev", Type: EntryStandard, Username: "entry:{{SessionName}}", KubernetesGroups: []string{"g"}}}
	dns := func(_ context.Context, id string) (string, error) {
		if id == "i-0123" {
			return "ip-10-0-0-5.us-west-2.compute.internal", nil
		}
		return "", errors.New("no such instance")
	}
	node, _ := canonicalize("arn:aws:sts::111122223333:assumed-role/NodeRole/i-0123")
	m, ok := lookup(node, ModeAPIAndConfigMap, ents, auth)
	if !ok {
		t.Fatal("node role not mapped")
	}
	u, err := render(context.Background(), m.username, node, dns)
	if err != nil || u != "system:node:ip-10-0-0-5.us-west-2.compute.internal" {
		t.Fatalf("node username %q, %v", u, err)
	}
	dev, _ := canonicalize("arn:aws:sts::111122223333:assumed-role/Dev/alice@corp")
	// Access entries win over aws-auth in API_AND_CONFIG_MAP.
	m, _ = lookup(dev, ModeAPIAndConfigMap, ents, auth)
	if u, _ := render(context.Background(), m.username, dev, dns); u != "entry:alice-corp" {
		t.Fatalf("entry username %q", u)
	}
	// CONFIG_MAP ignores access entries; API ignores aws-auth.
	m, _ = lookup(dev, ModeConfigMap, ents, auth)
	if u, _ := render(context.Background(), m.username, dev, dns); u != "dev:alice-corp" {
		t.Fatalf("configmap username %q", u)
	}
	if g, _ := render(context.Background(), m.groups[0], dev, dns); g != "devs-111122223333" {
		t.Fatalf("group %q", g)
	}
	if _, ok := lookup(node, ModeAPI, ents, auth); ok {
		t.Fatal("API mode used aws-auth")
	}
	// {{EC2PrivateDNSName}} needs an instance session.
	notInstance, _ := canonicalize("arn:aws:sts::111122223333:assumed-role/NodeRole/alice")
	if _, err := render(context.Background(), "system:node:{{EC2PrivateDNSName}}", notInstance, dns); err == nil {
		t.Fatal("EC2PrivateDNSName rendered for a non-instance session")
	}
}

func TestDefaultUsernames(t *testing.T) {
	if u := DefaultUsername("arn:aws:iam::111122223333:role/team/Dev", EntryStandard); u != "arn:aws:sts::111122223333:assumed-role/Dev/{{SessionName}}" {
		t.Fatal(u)
	}
	if u := DefaultUsername("arn:aws:iam::111122223333:user/bob", EntryStandard); u != "arn:aws:iam::111122223333:user/bob" {
		t.Fatal(u)
	}
	if u := DefaultUsername("arn:aws:iam::111122223333:role/Node", EntryEC2Linux); u != "system:node:{{EC2PrivateDNSName}}" {
		t.Fatal(u)
	}
	if !slices.Equal(EntryGroups(EntryEC2Linux), []string{"system:nodes"}) {
		t.Fatal("node groups")
	}
}
