package ipamd_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2sdk "github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/berth-io/berth/test/e2e"
)

// TestCustomNetworking: with AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG=true, as EKS
// users set it to give pods addresses from another subnet (here in a
// secondary block of the VPC), ipamd reads its
// Node and the ENIConfig it names from a real API server (berth-controlplane,
// which installs the VPC CNI's CRD as EKS does; ipamd's least-privilege role
// from deploy/rbac), puts
// pod ENIs in the ENIConfig's subnet with its security group, and never
// gives pods addresses of the primary ENI. Pods on two such nodes talk
// through the VPC router (EC2's source/dest check on the pod ENIs), and
// reach outside the VPC through SNAT to the node's primary address.
// ANNOTATE_POD_IP=true is on too: each pod is annotated with its address
// by the time its ADD returns, and the annotation is cleared by its DEL.
func TestCustomNetworking(t *testing.T) {
	cl := newCluster(t, "10.83.0.0/16", "10.83.0.0/20")
	ctx := context.Background()
	// The pods' subnet is in a block associated with the VPC for them, as
	// custom networking setups do (often from 100.64.0.0/10).
	if _, err := cl.ec2.AssociateVpcCidrBlock(ctx, &ec2sdk.AssociateVpcCidrBlockInput{VpcId: aws.String(cl.vpc), CidrBlock: aws.String("10.84.0.0/16")}); err != nil {
		t.Fatal(err)
	}
	podSubnet := netip.MustParsePrefix("10.84.64.0/20")
	s, err := cl.ec2.CreateSubnet(ctx, &ec2sdk.CreateSubnetInput{VpcId: aws.String(cl.vpc), CidrBlock: aws.String(podSubnet.String()),
		AvailabilityZone: aws.String("us-west-2a")})
	if err != nil {
		t.Fatal(err)
	}
	sg, err := cl.ec2.CreateSecurityGroup(ctx, &ec2sdk.CreateSecurityGroupInput{VpcId: aws.String(cl.vpc), GroupName: aws.String("pods"),
		Description: aws.String("pod ENIs")})
	if err != nil {
		t.Fatal(err)
	}

	cp, kubeconfig := ipamdAPI(t, cl, "customnet", "ipamd.yaml", "ipamd-annotate-pod-ip.yaml")
	// berth-controlplane installs the ENIConfig CRD, as EKS clusters have it.
	if out, err := cp.Kubectl(t, "wait", "--for=condition=Established", "crd/eniconfigs.crd.k8s.amazonaws.com", "--timeout=60s"); err != nil {
		t.Fatalf("CRD: %v\n%s", err, out)
	}
	eniConfig := fmt.Sprintf(`{"apiVersion":"crd.k8s.amazonaws.com/v1alpha1","kind":"ENIConfig","metadata":{"name":"us-west-2a"},`+
		`"spec":{"subnet":%q,"securityGroups":[%q]}}`, *s.Subnet.SubnetId, *sg.GroupId)
	manifest := filepath.Join(t.TempDir(), "eniconfig.json")
	if err := os.WriteFile(manifest, []byte(eniConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := cp.Kubectl(t, "apply", "-f", manifest); err != nil {
		t.Fatalf("ENIConfig: %v\n%s", err, out)
	}

	start := func(name string) *node {
		// The Node exists before ipamd asks for it, as kubelet registers it.
		nodeObj := filepath.Join(t.TempDir(), name+".json")
		if err := os.WriteFile(nodeObj, []byte(fmt.Sprintf(`{"apiVersion":"v1","kind":"Node","metadata":{"name":%q,`+
			`"labels":{"topology.kubernetes.io/zone":"us-west-2a"}}}`, name)), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := cp.Kubectl(t, "create", "-f", nodeObj); err != nil {
			t.Fatalf("node %s: %v\n%s", name, err, out)
		}
		return cl.startNodeWith(t, "m5.large", "", "", []string{"--chain-portmap=false", "--kubeconfig", kubeconfig},
			"AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG=true", "MY_NODE_NAME="+name, "ENI_CONFIG_LABEL_DEF=topology.kubernetes.io/zone",
			"ANNOTATE_POD_IP=true")
	}
	a, b := start("node-a"), start("node-b")
	// The pods exist before their sandboxes, as the kubelet sees them.
	for pod, node := range map[string]string{"web-1": "node-a", "web-2": "node-b"} {
		manifest := filepath.Join(t.TempDir(), pod+".json")
		if err := os.WriteFile(manifest, []byte(fmt.Sprintf(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":%q,"namespace":"default"},`+
			`"spec":{"nodeName":%q,"containers":[{"name":"c","image":"registry.k8s.io/pause:3.10"}]}}`, pod, node)), 0o644); err != nil {
			t.Fatal(err)
		}
		// The namespace's default ServiceAccount, which admission wants,
		// comes from the controller manager a moment after start.
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
			out, err := cp.Kubectl(t, "create", "-f", manifest)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("pod %s: %v\n%s", pod, err, out)
			}
		}
	}
	podIPs := func(pod string) string {
		out, err := cp.Kubectl(t, "-n", "default", "get", "pod", pod, "-o", `jsonpath={.metadata.annotations.vpc\.amazonaws\.com/pod-ips}`)
		if err != nil {
			t.Fatalf("get pod %s: %v\n%s", pod, err, out)
		}
		return out
	}

	p1, err := a.add(t, "web-1")
	if err != nil {
		t.Fatal(err)
	}
	p2, err := b.add(t, "web-2")
	if err != nil {
		t.Fatal(err)
	}
	// aws-node's /v1/eni-configs: the name of the node's ENIConfig.
	if code, body := introspect(t, a, "/v1/eni-configs"); code != http.StatusOK || string(body) != `"us-west-2a"` {
		t.Errorf("/v1/eni-configs: %d %s, want \"us-west-2a\"", code, body)
	}
	for _, p := range []*pod{p1, p2} {
		if !podSubnet.Contains(p.ip) {
			t.Fatalf("pod %s got %s, not an address of the ENIConfig's subnet %s", p.name, p.ip, podSubnet)
		}
		if got := podIPs(p.name); got != p.ip.String() {
			t.Errorf("pod %s annotated vpc.amazonaws.com/pod-ips=%q, want %s", p.name, got, p.ip)
		}
	}
	for _, n := range []*node{a, b} {
		out, err := cl.ec2.DescribeNetworkInterfaces(ctx, &ec2sdk.DescribeNetworkInterfacesInput{
			Filters: []ec2types.Filter{{Name: aws.String("attachment.instance-id"), Values: []string{n.inst.ID}}}})
		if err != nil {
			t.Fatal(err)
		}
		pods := 0
		for _, e := range out.NetworkInterfaces {
			primary := *e.Attachment.DeviceIndex == 0
			if primary && len(e.PrivateIpAddresses) != 1 {
				t.Errorf("%s: the primary ENI %s has %d addresses: pods got addresses of the node's subnet", n.inst.ID, *e.NetworkInterfaceId, len(e.PrivateIpAddresses))
			}
			if primary {
				continue
			}
			pods++
			if *e.SubnetId != *s.Subnet.SubnetId || len(e.Groups) != 1 || *e.Groups[0].GroupId != *sg.GroupId {
				t.Errorf("%s: pod ENI %s in %s with groups %v, want %s with %s", n.inst.ID, *e.NetworkInterfaceId, *e.SubnetId, e.Groups, *s.Subnet.SubnetId, *sg.GroupId)
			}
		}
		if pods == 0 {
			t.Errorf("%s has no pod ENI", n.inst.ID)
		}
	}

	p2.listen(t, 8080)
	if _, err := p1.dial(net.JoinHostPort(p2.ip.String(), "8080")); err != nil {
		t.Fatalf("pod to pod across nodes through the VPC router: %v", err)
	}
	if got := p1.sourceOutside(t); got != a.inst.PrimaryIP {
		t.Fatalf("outside saw source %s, want the node's primary %s (SNAT)", got, a.inst.PrimaryIP)
	}
	if err := a.del(t, p1); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if got := podIPs("web-1"); got != "" {
		t.Errorf("annotation after DEL: %q", got)
	}
}

// ipamdAPI starts berth-controlplane for cl's nodes, applies ipamd's roles
// (files of deploy/rbac) and returns a kubeconfig with exactly their
// rights: the berth-ipamd ServiceAccount's token.
func ipamdAPI(t *testing.T, cl *cluster, name string, roles ...string) (*e2e.Controlplane, string) {
	t.Helper()
	cp := e2e.StartControlplane(t, cl.lc, filepath.Join(t.TempDir(), "cp"), name, "--listen", e2e.FreePortOn(t, e2e.HostAddress(t)))
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range roles {
		if out, err := cp.Kubectl(t, "apply", "-f", filepath.Join(wd, "..", "..", "..", "deploy", "rbac", f)); err != nil {
			t.Fatalf("kubectl apply rbac/%s: %v\n%s", f, err, out)
		}
	}
	return cp, cp.ServiceAccountKubeconfig(t, "kube-system", "berth-ipamd")
}
