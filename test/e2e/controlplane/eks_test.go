package controlplane_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	ec2sdk "github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/eks"
	ekstypes "github.com/aws/aws-sdk-go-v2/service/eks/types"
	"github.com/aws/smithy-go"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

type clientcmdapiExec struct{}

func (clientcmdapiExec) build(cmd string, args []string) *clientcmdapi.ExecConfig {
	return &clientcmdapi.ExecConfig{APIVersion: "client.authentication.k8s.io/v1", Command: cmd, Args: args,
		InteractiveMode: clientcmdapi.NeverExecInteractiveMode}
}

func eksClient(t *testing.T, e *env) *eks.Client {
	t.Helper()
	cfg, err := config.LoadDefaultConfig(context.Background(),
		config.WithSharedCredentialsFiles([]string{filepath.Join(e.lc.StateDir, "credentials")}),
		config.WithRegion("us-west-2"), config.WithBaseEndpoint(e.cp.EKS))
	if err != nil {
		t.Fatal(err)
	}
	return eks.NewFromConfig(cfg)
}

func createEntry(principal string) *eks.CreateAccessEntryInput {
	return &eks.CreateAccessEntryInput{ClusterName: aws.String(cluster), PrincipalArn: aws.String(principal)}
}

func associate(principal, policy string) *eks.AssociateAccessPolicyInput {
	return &eks.AssociateAccessPolicyInput{ClusterName: aws.String(cluster), PrincipalArn: aws.String(principal),
		PolicyArn:   aws.String("arn:aws:eks::aws:cluster-access-policy/" + policy),
		AccessScope: &ekstypes.AccessScope{Type: ekstypes.AccessScopeTypeCluster}}
}

func listEntries() *eks.ListAccessEntriesInput {
	return &eks.ListAccessEntriesInput{ClusterName: aws.String(cluster)}
}

type instance struct{ id, dns string }

func runInstance(t *testing.T, e *env) instance {
	t.Helper()
	c := e.lc.EC2(t)
	ctx := context.Background()
	subnets, err := c.DescribeSubnets(ctx, &ec2sdk.DescribeSubnetsInput{})
	if err != nil || len(subnets.Subnets) == 0 {
		t.Fatalf("subnets: %v", err)
	}
	out, err := c.RunInstances(ctx, &ec2sdk.RunInstancesInput{ImageId: aws.String("ami-1"), InstanceType: ec2types.InstanceTypeM5Large,
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1), SubnetId: subnets.Subnets[0].SubnetId})
	if err != nil {
		t.Fatal(err)
	}
	i := out.Instances[0]
	t.Cleanup(func() {
		c.TerminateInstances(context.Background(), &ec2sdk.TerminateInstancesInput{InstanceIds: []string{*i.InstanceId}})
	})
	return instance{id: *i.InstanceId, dns: aws.ToString(i.PrivateDnsName)}
}

func apiErrorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

func TestEKSAPI(t *testing.T) {
	e := setup(t)
	c := eksClient(t, e)
	ctx := context.Background()

	d, err := c.DescribeCluster(ctx, &eks.DescribeClusterInput{Name: aws.String(cluster)})
	if err != nil {
		t.Fatal(err)
	}
	cl := d.Cluster
	if aws.ToString(cl.Name) != cluster || cl.Status != ekstypes.ClusterStatusActive || aws.ToString(cl.Version) != "1.37" ||
		aws.ToString(cl.Endpoint) != e.cp.APIServer || cl.CertificateAuthority == nil || aws.ToString(cl.CertificateAuthority.Data) == "" ||
		aws.ToString(cl.KubernetesNetworkConfig.ServiceIpv4Cidr) != "10.100.0.0/16" ||
		!strings.HasPrefix(aws.ToString(cl.Identity.Oidc.Issuer), "https://oidc.eks.us-west-2.amazonaws.com/id/") ||
		cl.AccessConfig.AuthenticationMode != ekstypes.AuthenticationModeApiAndConfigMap ||
		aws.ToString(cl.Arn) != "arn:aws:eks:us-west-2:000000000000:cluster/"+cluster || cl.CreatedAt == nil || time.Since(*cl.CreatedAt) > time.Hour {
		b, _ := json.Marshal(cl)
		t.Fatalf("DescribeCluster: %s", b)
	}
	l, err := c.ListClusters(ctx, &eks.ListClustersInput{})
	if err != nil || len(l.Clusters) != 1 || l.Clusters[0] != cluster {
		t.Fatalf("ListClusters %v %v", l, err)
	}

	// The creator's bootstrap entry is listed with the cluster-admin policy.
	admins, err := c.ListAccessEntries(ctx, &eks.ListAccessEntriesInput{ClusterName: aws.String(cluster),
		AssociatedPolicyArn: aws.String("arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy")})
	if err != nil || len(admins.AccessEntries) != 1 || admins.AccessEntries[0] != "arn:aws:iam::000000000000:root" {
		t.Fatalf("admin entries %v %v", admins, err)
	}

	// Create, describe, update, associate (namespace scope), list, delete.
	p := roleARN("team/Builder")
	in := createEntry(p)
	in.KubernetesGroups = []string{"builders"}
	in.ClientRequestToken = aws.String("tok-1")
	ce, err := c.CreateAccessEntry(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(ce.AccessEntry.Username) != "arn:aws:sts::000000000000:assumed-role/Builder/{{SessionName}}" ||
		aws.ToString(ce.AccessEntry.Type) != "STANDARD" || !strings.HasPrefix(aws.ToString(ce.AccessEntry.AccessEntryArn), "arn:aws:eks:us-west-2:000000000000:access-entry/"+cluster+"/role/") {
		t.Fatalf("created %+v", ce.AccessEntry)
	}
	// The same client token is an idempotent retry; another is a conflict.
	if _, err := c.CreateAccessEntry(ctx, in); err != nil {
		t.Fatalf("idempotent retry: %v", err)
	}
	in.ClientRequestToken = aws.String("tok-2")
	if _, err := c.CreateAccessEntry(ctx, in); apiErrorCode(err) != "ResourceInUseException" {
		t.Fatalf("duplicate entry: %v", err)
	}
	if _, err := c.UpdateAccessEntry(ctx, &eks.UpdateAccessEntryInput{ClusterName: aws.String(cluster), PrincipalArn: aws.String(p), Username: aws.String("builder")}); err != nil {
		t.Fatal(err)
	}
	de, err := c.DescribeAccessEntry(ctx, &eks.DescribeAccessEntryInput{ClusterName: aws.String(cluster), PrincipalArn: aws.String(p)})
	if err != nil || aws.ToString(de.AccessEntry.Username) != "builder" || len(de.AccessEntry.KubernetesGroups) != 1 {
		t.Fatalf("describe %+v %v", de, err)
	}
	ai := associate(p, "AmazonEKSEditPolicy")
	ai.AccessScope = &ekstypes.AccessScope{Type: ekstypes.AccessScopeTypeNamespace, Namespaces: []string{"ci", "builds"}}
	if _, err := c.AssociateAccessPolicy(ctx, ai); err != nil {
		t.Fatal(err)
	}
	lp, err := c.ListAssociatedAccessPolicies(ctx, &eks.ListAssociatedAccessPoliciesInput{ClusterName: aws.String(cluster), PrincipalArn: aws.String(p)})
	if err != nil || len(lp.AssociatedAccessPolicies) != 1 || len(lp.AssociatedAccessPolicies[0].AccessScope.Namespaces) != 2 {
		t.Fatalf("associated %+v %v", lp, err)
	}
	pol, err := c.ListAccessPolicies(ctx, &eks.ListAccessPoliciesInput{})
	if err != nil || len(pol.AccessPolicies) != 4 {
		t.Fatalf("access policies %+v %v", pol, err)
	}
	// Pagination.
	page, err := c.ListAccessEntries(ctx, &eks.ListAccessEntriesInput{ClusterName: aws.String(cluster), MaxResults: aws.Int32(1)})
	if err != nil || len(page.AccessEntries) != 1 || page.NextToken == nil {
		t.Fatalf("page 1 %+v %v", page, err)
	}
	page2, err := c.ListAccessEntries(ctx, &eks.ListAccessEntriesInput{ClusterName: aws.String(cluster), MaxResults: aws.Int32(1), NextToken: page.NextToken})
	if err != nil || len(page2.AccessEntries) != 1 || page2.AccessEntries[0] == page.AccessEntries[0] {
		t.Fatalf("page 2 %+v %v", page2, err)
	}
	if _, err := c.DisassociateAccessPolicy(ctx, &eks.DisassociateAccessPolicyInput{ClusterName: aws.String(cluster), PrincipalArn: aws.String(p), PolicyArn: ai.PolicyArn}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteAccessEntry(ctx, &eks.DeleteAccessEntryInput{ClusterName: aws.String(cluster), PrincipalArn: aws.String(p)}); err != nil {
		t.Fatal(err)
	}

	// Bad input gets EKS's error shapes, never a 500.
	bad := []struct {
		name string
		call func() error
		code string
	}{
		{"unknown cluster", func() error {
			_, err := c.DescribeCluster(ctx, &eks.DescribeClusterInput{Name: aws.String("nope")})
			return err
		}, "ResourceNotFoundException"},
		{"entry on unknown cluster", func() error {
			_, err := c.CreateAccessEntry(ctx, &eks.CreateAccessEntryInput{ClusterName: aws.String("nope"), PrincipalArn: aws.String(p)})
			return err
		}, "ResourceNotFoundException"},
		{"malformed principal", func() error {
			_, err := c.CreateAccessEntry(ctx, createEntry("arn:aws:s3:::bucket"))
			return err
		}, "InvalidParameterException"},
		{"system: group", func() error {
			in := createEntry(roleARN("X"))
			in.KubernetesGroups = []string{"system:masters"}
			_, err := c.CreateAccessEntry(ctx, in)
			return err
		}, "InvalidParameterException"},
		{"unknown type", func() error {
			in := createEntry(roleARN("X"))
			in.Type = aws.String("WINDOWS_98")
			_, err := c.CreateAccessEntry(ctx, in)
			return err
		}, "InvalidParameterException"},
		{"deleted entry", func() error {
			_, err := c.DescribeAccessEntry(ctx, &eks.DescribeAccessEntryInput{ClusterName: aws.String(cluster), PrincipalArn: aws.String(p)})
			return err
		}, "ResourceNotFoundException"},
		{"unknown policy", func() error {
			_, err := c.AssociateAccessPolicy(ctx, associate("arn:aws:iam::000000000000:root", "AmazonEKSGodPolicy"))
			return err
		}, "InvalidParameterException"},
		{"namespace scope without namespaces", func() error {
			ai := associate("arn:aws:iam::000000000000:root", "AmazonEKSViewPolicy")
			ai.AccessScope.Type = ekstypes.AccessScopeTypeNamespace
			_, err := c.AssociateAccessPolicy(ctx, ai)
			return err
		}, "InvalidParameterException"},
		{"bad maxResults", func() error {
			_, err := c.ListAccessEntries(ctx, &eks.ListAccessEntriesInput{ClusterName: aws.String(cluster), MaxResults: aws.Int32(1000)})
			return err
		}, "InvalidParameterException"},
		{"bad nextToken", func() error {
			_, err := c.ListAccessEntries(ctx, &eks.ListAccessEntriesInput{ClusterName: aws.String(cluster), NextToken: aws.String("zzz")})
			return err
		}, "InvalidParameterException"},
	}
	for _, b := range bad {
		if err := b.call(); apiErrorCode(err) != b.code {
			t.Errorf("%s: got %v, want %s", b.name, err, b.code)
		}
	}
	// Unsigned and wrongly signed calls are refused with 403.
	resp, err := http.Get(e.cp.EKS + "/clusters")
	if err != nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("unsigned call: %v %v", resp, err)
	}
	resp.Body.Close()

	// The authentication mode moves forward only, through UpdateClusterConfig.
	up, err := c.UpdateClusterConfig(ctx, &eks.UpdateClusterConfigInput{Name: aws.String(cluster),
		AccessConfig: &ekstypes.UpdateAccessConfigRequest{AuthenticationMode: ekstypes.AuthenticationModeApi}})
	if err != nil || up.Update.Status != ekstypes.UpdateStatusSuccessful {
		t.Fatalf("UpdateClusterConfig: %+v %v", up, err)
	}
	if d, err := c.DescribeCluster(ctx, &eks.DescribeClusterInput{Name: aws.String(cluster)}); err != nil || d.Cluster.AccessConfig.AuthenticationMode != ekstypes.AuthenticationModeApi {
		t.Fatalf("mode after update: %v", err)
	}
	if _, err := c.UpdateClusterConfig(ctx, &eks.UpdateClusterConfigInput{Name: aws.String(cluster),
		AccessConfig: &ekstypes.UpdateAccessConfigRequest{AuthenticationMode: ekstypes.AuthenticationModeConfigMap}}); apiErrorCode(err) != "InvalidRequestException" {
		t.Fatalf("backward mode change: %v", err)
	}

	// The real aws CLI (Debian awscli) against the same API.
	out, err := awsCLI(t, e, "eks", "describe-cluster", "--name", cluster)
	if err != nil || !strings.Contains(out, `"status": "ACTIVE"`) || !strings.Contains(out, e.cp.APIServer) {
		t.Fatalf("aws eks describe-cluster: %v\n%s", err, out)
	}
	out, err = awsCLI(t, e, "eks", "list-access-entries", "--cluster-name", cluster)
	if err != nil || !strings.Contains(out, "arn:aws:iam::000000000000:root") {
		t.Fatalf("aws eks list-access-entries: %v\n%s", err, out)
	}
	out, err = awsCLI(t, e, "eks", "describe-cluster", "--name", "missing")
	if err == nil || !strings.Contains(out, "ResourceNotFoundException") {
		t.Fatalf("aws eks describe-cluster missing: %v\n%s", err, out)
	}
}
