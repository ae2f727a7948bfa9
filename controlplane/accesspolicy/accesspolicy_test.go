package accesspolicy

import (
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/berth-io/berth/controlplane/eks"
)

func TestDesiredBindings(t *testing.T) {
	admin, dev := "arn:aws:iam::111122223333:role/Admin", "arn:aws:iam::111122223333:role/Dev"
	got := desired([]eks.AccessEntry{
		{PrincipalARN: admin, Policies: []eks.Association{{PolicyARN: eks.PolicyARNPrefix + "AmazonEKSClusterAdminPolicy", ScopeType: "cluster"}}},
		{PrincipalARN: dev, Policies: []eks.Association{
			{PolicyARN: eks.PolicyARNPrefix + "AmazonEKSEditPolicy", ScopeType: "namespace", Namespaces: []string{"ci", "web"}},
			{PolicyARN: eks.PolicyARNPrefix + "AmazonEKSUnknownPolicy", ScopeType: "cluster"},
		}},
	})
	if len(got) != 3 {
		t.Fatalf("want 1 cluster and 2 namespace bindings, got %+v", got)
	}
	var cluster, ns int
	for _, b := range got {
		switch {
		case b.namespace == "" && b.role == "cluster-admin" && b.group == eks.EntryGroup(admin):
			cluster++
		case b.namespace != "" && b.role == "edit" && b.group == eks.EntryGroup(dev):
			ns++
		default:
			t.Errorf("unexpected binding %+v", b)
		}
	}
	if cluster != 1 || ns != 2 {
		t.Fatalf("cluster %d ns %d", cluster, ns)
	}
	// Bindings are matched on role and the single group subject only.
	for _, b := range got {
		ref := rbacv1.RoleRef{Kind: "ClusterRole", Name: b.role}
		if !matches(ref, []rbacv1.Subject{{Kind: rbacv1.GroupKind, Name: b.group}}, b) ||
			matches(ref, []rbacv1.Subject{{Kind: rbacv1.UserKind, Name: b.group}}, b) ||
			matches(rbacv1.RoleRef{Kind: "ClusterRole", Name: "view"}, []rbacv1.Subject{{Kind: rbacv1.GroupKind, Name: b.group}}, b) && b.role != "view" {
			t.Fatalf("matches wrong for %+v", b)
		}
	}
}
