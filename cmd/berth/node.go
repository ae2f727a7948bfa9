package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	ec2sdk "github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/eks"
	ekstypes "github.com/aws/aws-sdk-go-v2/service/eks/types"
	"github.com/vishvananda/netlink"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/berth-io/berth/deploy/addons"
	"github.com/berth-io/berth/deploy/rbac"
	"github.com/berth-io/berth/internal/imageload"
	"github.com/berth-io/berth/internal/ociimage"
)

// Local nodes are localcloud instances that `berth up` boots as an AMI
// would: berth-bootstrap runs in the instance's network namespace with
// the instance's user data (a NodeConfig built from DescribeCluster), and
// the agents EKS runs as DaemonSets run beside it as processes: berth-ipamd
// (aws-node), berth-netpol and kube-proxy (kubeproxy.go).

// nodeTag marks the instances that are a local cluster's nodes.
const nodeTag = "berth.io/local-node"

// pauseImage is the sandbox image of local nodes, built from berth-pause:
// they have no registry to pull registry.k8s.io/pause from.
const pauseImage = "localhost/berth/pause:3.10"

type nodeOptions struct {
	count    int
	typ      string
	vpcCIDR  string
	hostAddr string // the host's address, which instances reach through the VPC router
	// resolvConf is the file naming pods' (and CoreDNS's) upstream DNS
	// servers; "" picks one (nodeResolvConf).
	resolvConf string
	sts        string    // localcloud's listener on hostAddr, where nodes presign their tokens
	start      time.Time // of this berth up, for the times it prints
	// images waits for the nodes' images, built while the control plane
	// starts.
	images func() ([]imageload.Image, error)
}

// localAWS is what `berth up` needs to reach localcloud and the EKS API.
type localAWS struct {
	ec2 *ec2sdk.Client
	eks *eks.Client
}

// newLocalAWS makes clients with localcloud's root keys and region, from
// its admin API: nothing of the user's AWS environment (keys, profile,
// endpoints) may reach it.
func newLocalAWS(ctx context.Context, lcEndpoint, eksEndpoint string) (*localAWS, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, lcEndpoint+"/_localcloud/credentials", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("localcloud credentials: %w", err)
	}
	defer resp.Body.Close()
	var keys struct{ AccessKeyID, SecretAccessKey, Region string }
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("localcloud credentials: HTTP %d", resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&keys); err != nil || keys.AccessKeyID == "" {
		return nil, fmt.Errorf("localcloud credentials: %v", err)
	}
	cfg := aws.Config{Region: keys.Region,
		Credentials: credentials.NewStaticCredentialsProvider(keys.AccessKeyID, keys.SecretAccessKey, "")}
	return &localAWS{
		ec2: ec2sdk.NewFromConfig(cfg, func(o *ec2sdk.Options) { o.BaseEndpoint = aws.String(lcEndpoint) }),
		eks: eks.NewFromConfig(cfg, func(o *eks.Options) { o.BaseEndpoint = aws.String(eksEndpoint) }),
	}, nil
}

// hostAddress is the host's first global unicast IPv4 address: instances
// reach it through their VPC's router, unlike the host's loopback.
func hostAddress() (string, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", fmt.Errorf("host addresses: %w", err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && n.IP.IsGlobalUnicast() {
			return n.IP.String(), nil
		}
	}
	return "", errors.New("no global IPv4 address on the host for local nodes to reach the control plane: set --host-address")
}

// checkVPCCIDR refuses a VPC CIDR the host already routes (its own LAN, a
// VPN): localcloud's route to the VPC would shadow it.
func checkVPCCIDR(cidr string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(cidr)
	if err != nil || !p.Addr().Is4() || p.Bits() < 16 || p.Bits() > 24 {
		return netip.Prefix{}, fmt.Errorf("--vpc-cidr %q: want an IPv4 CIDR from /16 to /24", cidr)
	}
	p = p.Masked()
	// Every table (a VPN's policy routing too), but the kernel's local one.
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("host routes: %w", err)
	}
	for _, r := range routes {
		if r.Dst == nil || r.Table == unix.RT_TABLE_LOCAL {
			continue
		}
		ones, _ := r.Dst.Mask.Size()
		a, ok := netip.AddrFromSlice(r.Dst.IP.To4())
		if !ok || ones == 0 {
			continue
		}
		if r.LinkIndex != 0 {
			link, err := netlink.LinkByIndex(r.LinkIndex)
			// localcloud's own uplinks (bv<vpc>) are the VPCs' routes.
			if err == nil && strings.HasPrefix(link.Attrs().Name, "bv") && link.Type() == "veth" {
				continue
			}
		}
		if netip.PrefixFrom(a, ones).Overlaps(p) {
			return netip.Prefix{}, fmt.Errorf("--vpc-cidr %s overlaps the host's route to %s: pick another", p, r.Dst)
		}
	}
	return p, nil
}

// nodeSubnet finds or makes the cluster's VPC and its subnet (the first
// half of the VPC, in us-west-2a).
func (a *localAWS) nodeSubnet(ctx context.Context, cluster string, cidr netip.Prefix) (string, error) {
	tag := []ec2types.Filter{{Name: aws.String("tag:" + nodeTag), Values: []string{cluster}}}
	tags := func(t ec2types.ResourceType) []ec2types.TagSpecification {
		return []ec2types.TagSpecification{{ResourceType: t, Tags: []ec2types.Tag{
			{Key: aws.String(nodeTag), Value: aws.String(cluster)}, {Key: aws.String("Name"), Value: aws.String("berth-" + cluster)}}}}
	}
	// Each step finds what an earlier, interrupted run made.
	vpcs, err := a.ec2.DescribeVpcs(ctx, &ec2sdk.DescribeVpcsInput{Filters: tag})
	if err != nil {
		return "", fmt.Errorf("describe vpcs: %w", err)
	}
	var vpcID string
	if len(vpcs.Vpcs) > 0 {
		v := vpcs.Vpcs[0]
		if aws.ToString(v.CidrBlock) != cidr.String() {
			return "", fmt.Errorf("the nodes' VPC %s is %s, not --vpc-cidr %s: keep its CIDR, or start from an empty state dir", aws.ToString(v.VpcId), aws.ToString(v.CidrBlock), cidr)
		}
		vpcID = aws.ToString(v.VpcId)
	} else {
		v, err := a.ec2.CreateVpc(ctx, &ec2sdk.CreateVpcInput{CidrBlock: aws.String(cidr.String()), TagSpecifications: tags(ec2types.ResourceTypeVpc)})
		if err != nil {
			return "", fmt.Errorf("create vpc %s: %w", cidr, err)
		}
		vpcID = aws.ToString(v.Vpc.VpcId)
	}
	subnets, err := a.ec2.DescribeSubnets(ctx, &ec2sdk.DescribeSubnetsInput{Filters: append(tag,
		ec2types.Filter{Name: aws.String("vpc-id"), Values: []string{vpcID}})})
	if err != nil {
		return "", fmt.Errorf("describe subnets: %w", err)
	}
	if len(subnets.Subnets) > 0 {
		return *subnets.Subnets[0].SubnetId, nil
	}
	half := netip.PrefixFrom(cidr.Addr(), cidr.Bits()+1)
	s, err := a.ec2.CreateSubnet(ctx, &ec2sdk.CreateSubnetInput{VpcId: aws.String(vpcID), CidrBlock: aws.String(half.String()),
		AvailabilityZone: aws.String("us-west-2a"), TagSpecifications: tags(ec2types.ResourceTypeSubnet)})
	if err != nil {
		return "", fmt.Errorf("create subnet %s: %w", half, err)
	}
	return *s.Subnet.SubnetId, nil
}

// nodeAccess gives localcloud's instance role an EC2_LINUX access entry,
// as EKS does for a managed node group's role.
func (a *localAWS) nodeAccess(ctx context.Context, cluster string) (*ekstypes.Cluster, error) {
	out, err := a.eks.DescribeCluster(ctx, &eks.DescribeClusterInput{Name: aws.String(cluster)})
	if err != nil {
		return nil, fmt.Errorf("describe cluster %s: %w", cluster, err)
	}
	arn := strings.Split(aws.ToString(out.Cluster.Arn), ":")
	if len(arn) < 5 {
		return nil, fmt.Errorf("cluster ARN %q", aws.ToString(out.Cluster.Arn))
	}
	role := "arn:aws:iam::" + arn[4] + ":role/berth-node-role"
	_, err = a.eks.CreateAccessEntry(ctx, &eks.CreateAccessEntryInput{ClusterName: aws.String(cluster),
		PrincipalArn: aws.String(role), Type: aws.String("EC2_LINUX")})
	var inUse *ekstypes.ResourceInUseException
	if err != nil && !errors.As(err, &inUse) {
		return nil, fmt.Errorf("access entry for %s: %w", role, err)
	}
	return out.Cluster, nil
}

// systemdResolvConf is systemd-resolved's list of the real upstream
// servers, behind its 127.0.0.53 stub.
const systemdResolvConf = "/run/systemd/resolve/resolv.conf"

// nodeResolvConf picks the resolv.conf kubelet hands pods of dnsPolicy
// Default, CoreDNS among them: its servers are CoreDNS's upstreams. Nodes
// share the host's files, but a loopback server (systemd-resolved's stub)
// is, inside a pod, the pod itself: CoreDNS's loop plugin then stops it
// and the cluster has no DNS. So a file with a loopback server is passed
// over for systemd-resolved's own list, as kubeadm does. "" is the host's
// /etc/resolv.conf, kubelet's default.
func nodeResolvConf(flag string, candidates ...string) (string, error) {
	if flag != "" {
		candidates = []string{flag}
	}
	var why []string
	for i, path := range candidates {
		servers, err := nameservers(path)
		switch {
		case errors.Is(err, os.ErrNotExist) && flag == "":
			continue
		case err != nil:
			return "", fmt.Errorf("node resolv.conf: %w", err)
		case len(servers) == 0:
			why = append(why, path+" names no nameserver")
		case slices.ContainsFunc(servers, func(a netip.Addr) bool { return a.IsLoopback() }):
			why = append(why, fmt.Sprintf("%s names a loopback nameserver (%v)", path, servers))
		case i == 0 && flag == "" && path == "/etc/resolv.conf":
			return "", nil
		default:
			return path, nil
		}
	}
	return "", fmt.Errorf("no resolv.conf for the nodes' pods: %s; CoreDNS would forward to itself: give --resolv-conf a file naming your network's DNS servers",
		strings.Join(why, "; "))
}

// nameservers reads the nameserver lines of a resolv.conf.
func nameservers(path string) ([]netip.Addr, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "nameserver" {
			// A scoped IPv6 server (fe80::1%eth0) is still an address.
			a, err := netip.ParseAddr(f[1])
			if err != nil {
				return nil, fmt.Errorf("%s: nameserver %q: %w", path, f[1], err)
			}
			out = append(out, a)
		}
	}
	return out, nil
}

// userData is the NodeConfig an EKS node group would give its instances;
// resolvConf, when set, is kubelet's resolvConf.
func userData(cl *ekstypes.Cluster, resolvConf string) (string, error) {
	if cl.Endpoint == nil || cl.CertificateAuthority == nil || cl.CertificateAuthority.Data == nil {
		return "", fmt.Errorf("cluster %s has no endpoint or CA yet", aws.ToString(cl.Name))
	}
	cidr := "10.100.0.0/16"
	if n := cl.KubernetesNetworkConfig; n != nil && n.ServiceIpv4Cidr != nil {
		cidr = *n.ServiceIpv4Cidr
	}
	kubelet := ""
	if resolvConf != "" {
		kubelet = fmt.Sprintf("  kubelet:\n    config:\n      resolvConf: %q\n", resolvConf)
	}
	return fmt.Sprintf(`MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="BERTH"

--BERTH
Content-Type: application/node.eks.aws

apiVersion: node.eks.aws/v1alpha1
kind: NodeConfig
spec:
  cluster:
    name: %s
    apiServerEndpoint: %s
    certificateAuthority: %s
    cidr: %s
  containerd:
    config: |
      [plugins."io.containerd.grpc.v1.cri"]
      sandbox_image = %q
%s
--BERTH--
`, aws.ToString(cl.Name), aws.ToString(cl.Endpoint), aws.ToString(cl.CertificateAuthority.Data), cidr, pauseImage, kubelet), nil
}

// nodeInstances returns the cluster's running or pending nodes, and
// launches more until there are count.
func (a *localAWS) nodeInstances(ctx context.Context, cluster, subnet, typ, ud string, count int) ([]ec2types.Instance, error) {
	out, err := a.ec2.DescribeInstances(ctx, &ec2sdk.DescribeInstancesInput{Filters: []ec2types.Filter{
		{Name: aws.String("tag:" + nodeTag), Values: []string{cluster}},
		{Name: aws.String("instance-state-name"), Values: []string{"pending", "running"}}}})
	if err != nil {
		return nil, fmt.Errorf("describe instances: %w", err)
	}
	var insts []ec2types.Instance
	for _, r := range out.Reservations {
		insts = append(insts, r.Instances...)
	}
	if missing := count - len(insts); missing > 0 {
		run, err := a.ec2.RunInstances(ctx, &ec2sdk.RunInstancesInput{ImageId: aws.String("ami-berth"), InstanceType: ec2types.InstanceType(typ),
			MinCount: aws.Int32(int32(missing)), MaxCount: aws.Int32(int32(missing)), SubnetId: aws.String(subnet),
			UserData: aws.String(base64.StdEncoding.EncodeToString([]byte(ud))),
			TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeInstance, Tags: []ec2types.Tag{
				{Key: aws.String(nodeTag), Value: aws.String(cluster)}}}}})
		if err != nil {
			return nil, fmt.Errorf("run %d %s instances: %w", missing, typ, err)
		}
		insts = append(insts, run.Instances...)
	}
	return insts, nil
}

// nodeProcesses are the suffixes of a node's components, in the order
// `berth down` stops them: bootstrap first, its pods' CNI DEL needs ipamd.
var nodeProcesses = []string{"-bootstrap", "-kube-proxy", "-netpol", "-ipamd"}

func isRunning(state, name string) bool { _, ok := running(state, name); return ok }

// nodeDir is where a node keeps its root (kubelet, containerd, ipamd).
func nodeDir(state, instanceID string) string { return filepath.Join(state, "nodes", instanceID) }

// nodeComponents are the processes that make one instance a node.
func nodeComponents(state, binDir, instanceID, sts string) []component {
	root := nodeDir(state, instanceID)
	netns := "--net=/var/run/netns/berth-" + instanceID
	// As on EC2, the node reaches EC2 inside its instance and signs with
	// its instance role; STS is the host listener that the control plane
	// verifies tokens against.
	env := append(nodeEnv(os.Getenv), "AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_CONFIG_FILE=/dev/null",
		"AWS_ENDPOINT_URL=http://169.254.169.254:4566", "AWS_ENDPOINT_URL_STS=http://"+sts)
	return []component{
		{name: "node-" + instanceID + "-bootstrap", bin: "nsenter", exe: "berth-bootstrap", env: env, args: func(string) []string {
			return []string{netns, filepath.Join(binDir, "berth-bootstrap"), "init", "--root", root, "--run-mode", "supervise",
				"--kubelet-bin", filepath.Join(binDir, "kubelet"), "--berth-bin", filepath.Join(binDir, "berth")}
		}},
		{name: "node-" + instanceID + "-ipamd", bin: "nsenter", exe: "berth-ipamd",
			// As aws-node's manifest sets it: the policy agent runs beside.
			env: append(env, "AWS_VPC_K8S_PLUGIN_LOG_FILE="+filepath.Join(root, "var/log/aws-routed-eni/plugin.log"),
				"NETWORK_POLICY_ENFORCING_MODE=standard"),
			args: func(string) []string {
				return []string{netns, filepath.Join(binDir, "berth-ipamd"),
					"--cni-bin-dir", filepath.Join(root, "opt/cni/bin"), "--cni-conf-dir", filepath.Join(root, "etc/cni/net.d"),
					"--socket", filepath.Join(root, "var/run/aws-node/ipamd.sock"), "--state-dir", filepath.Join(root, "var/run/aws-node"),
					"--npa-socket", filepath.Join(root, "var/run/aws-node/npa.sock")}
			}},
	}
}

// nodeEnv is the part of the host's environment a node's processes get, as
// an AMI's units would: no AWS settings (the node signs with its instance
// role), no proxies (IMDS and the host address are not behind them), no
// KUBECONFIG.
func nodeEnv(getenv func(string) string) []string {
	var env []string
	for _, k := range []string{"PATH", "HOME", "LANG", "LC_ALL", "TZ"} {
		if v := getenv(k); v != "" {
			env = append(env, k+"="+v)
		}
	}
	return env
}

func withoutAWS(env []string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, "AWS_") {
			out = append(out, kv)
		}
	}
	return out
}

// nodeImages builds the images of the binaries that local nodes need (the
// pod sandbox, CoreDNS and metrics-server) and saves their blobs under
// dir, which every node's containerd shares: an AMI ships such images
// pre-pulled, and berth's own are in no registry.
func nodeImages(binDir, dir string) ([]imageload.Image, error) {
	var imgs []imageload.Image
	// Each at the path of the upstream image's program, which is also
	// its process name.
	for _, b := range []struct{ name, bin, path string }{
		{pauseImage, "berth-pause", "/pause"},
		{addons.CoreDNSImage, "berth-coredns", "/coredns"},
		{addons.MetricsServerImage, "metrics-server", "/metrics-server"},
	} {
		data, err := os.ReadFile(filepath.Join(binDir, b.bin))
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", b.name, err)
		}
		built, err := ociimage.Image{Name: b.name, Arch: runtime.GOARCH, Entrypoint: []string{b.path},
			Files: []ociimage.File{{Path: b.path, Mode: 0o755, Data: data}}}.Build()
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", b.name, err)
		}
		// Pinned, so that kubelet's image GC never removes what no
		// registry can give back (containerd 1.7 and later honour it).
		img, err := imageload.Save(dir, built, map[string]string{"io.cri-containerd.pinned": "pinned"})
		if err != nil {
			return nil, err
		}
		imgs = append(imgs, img)
	}
	return imgs, nil
}

// loadImages makes images known to a node's containerd as soon as it
// serves. Their blobs are linked into its content store, not copied: the
// CRI plugin unpacks an image when a pod first runs it.
func loadImages(ctx context.Context, root string, imgs []imageload.Image, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	s := imageload.Store{Socket: filepath.Join(root, "run/containerd/containerd.sock"), Namespace: "k8s.io",
		ContentDir: filepath.Join(root, "var/lib/containerd/io.containerd.content.v1.content")}
	if _, err := s.Load(ctx, imgs...); err != nil {
		return fmt.Errorf("images of node %s: %w", filepath.Base(root), err)
	}
	return nil
}

// upNodes boots the cluster's nodes and waits for each to register Ready.
func upNodes(ctx context.Context, out io.Writer, state, binDir, cluster, kubeconfig string, o nodeOptions, a *localAWS) error {
	started := time.Now()
	cidr, err := checkVPCCIDR(o.vpcCIDR)
	if err != nil {
		return err
	}
	cl, err := a.nodeAccess(ctx, cluster)
	if err != nil {
		return err
	}
	resolvConf, err := nodeResolvConf(o.resolvConf, "/etc/resolv.conf", systemdResolvConf)
	if err != nil {
		return err
	}
	ud, err := userData(cl, resolvConf)
	if err != nil {
		return err
	}
	subnet, err := a.nodeSubnet(ctx, cluster, cidr)
	if err != nil {
		return err
	}
	insts, err := a.nodeInstances(ctx, cluster, subnet, o.typ, ud, o.count)
	if err != nil {
		return err
	}
	// The agents' credentials: two kubectl round trips each, side by side.
	var proxyKubeconfig, netpolKubeconfig string
	var creds errgroup.Group
	creds.Go(func() (err error) {
		proxyKubeconfig, err = serviceAccountKubeconfig(ctx, binDir, kubeconfig, state, cl, kubeProxyRBAC, "kube-system", "kube-proxy")
		if err != nil {
			return fmt.Errorf("kube-proxy: %w", err)
		}
		return nil
	})
	creds.Go(func() (err error) {
		netpolKubeconfig, err = serviceAccountKubeconfig(ctx, binDir, kubeconfig, state, cl, string(rbac.NetpolAgent), "kube-system", "berth-netpol")
		if err != nil {
			return fmt.Errorf("network policy agent: %w", err)
		}
		return nil
	})
	if err := creds.Wait(); err != nil {
		return err
	}
	type node struct {
		id, name, ip string
		bootstrap    component
		npa          string    // the policy agent's socket
		netpol       string    // its component's name
		since        time.Time // its kubelet must be heard from since (zero: one running before)
	}
	var nodes []node
	// Every node's agents start together: a policy agent takes a second or
	// more to load its programs and sync.
	for _, in := range insts {
		id := aws.ToString(in.InstanceId)
		if err := waitFile(ctx, "/var/run/netns/berth-"+id, 30*time.Second); err != nil {
			return fmt.Errorf("instance %s did not start: %w", id, err)
		}
		if err := os.MkdirAll(nodeDir(state, id), 0o700); err != nil {
			return fmt.Errorf("node dir: %w", err)
		}
		name := aws.ToString(in.PrivateDnsName)
		comps := nodeComponents(state, binDir, id, o.sts)
		agents := append(comps[1:], kubeProxyComponent(state, binDir, id, name, proxyKubeconfig),
			netpolComponent(state, binDir, id, name, netpolKubeconfig))
		n := node{id: id, name: name, ip: aws.ToString(in.PrivateIpAddress), bootstrap: comps[0],
			npa: filepath.Join(nodeDir(state, id), "var/run/aws-node/npa.sock"), netpol: agents[len(agents)-1].name}
		if _, ok := running(state, n.netpol); !ok {
			_ = os.Remove(n.npa) // a stopped agent's: not an answer
		}
		for _, c := range agents {
			if err := start(ctx, state, binDir, c); err != nil {
				return err
			}
		}
		nodes = append(nodes, n)
	}
	imgs, err := o.images()
	if err != nil {
		return err
	}
	var loads errgroup.Group
	for i := range nodes {
		n := &nodes[i]
		// kubelet (re)creates pods as soon as it runs: the policy agent
		// must answer berth-cni by then, or those pods go unenforced.
		if err := waitFile(ctx, n.npa, time.Minute); err != nil {
			return fmt.Errorf("network policy agent of %s (log: %s): %w", n.id, logPath(state, n.netpol), err)
		}
		// A kubelet started before this berth up reports its heartbeat on
		// its Lease, and on the Node only every few minutes: its Node's
		// Ready stands as it is. A kubelet started now must post its own.
		if !isRunning(state, n.bootstrap.name) {
			n.since = started
		}
		if err := start(ctx, state, binDir, n.bootstrap); err != nil {
			return err
		}
		// Within milliseconds of containerd's start, before kubelet has
		// registered its Node, let alone been given a pod.
		root := nodeDir(state, n.id)
		loads.Go(func() error { return loadImages(ctx, root, imgs, time.Minute) })
	}
	if err := loads.Wait(); err != nil {
		return err
	}
	// Nodes are waited on together, each said as it turns Ready.
	ready, rctx := errgroup.WithContext(ctx) // the first failure ends the other waits
	var mu sync.Mutex
	for _, n := range nodes {
		ready.Go(func() error {
			if err := waitNodeReady(rctx, binDir, kubeconfig, n.name, n.since, 3*time.Minute); err != nil {
				return fmt.Errorf("node %s (%s; logs in %s): %w", n.name, n.id, filepath.Join(nodeDir(state, n.id), "var/log/berth"), err)
			}
			// An agent that exits at once (a bad flag, a taken port)
			// leaves a Ready node without Services or policies: say so now.
			for _, suffix := range nodeProcesses {
				if c := "node-" + n.id + suffix; !isRunning(state, c) {
					return fmt.Errorf("node %s: %s exited (log: %s)", n.name, c, logPath(state, c))
				}
			}
			mu.Lock()
			defer mu.Unlock()
			fmt.Fprintf(out, "node %s ready: instance %s (%s), %s [%s]\n", n.name, n.id, o.typ, n.ip, since(o.start))
			return nil
		})
	}
	if err := ready.Wait(); err != nil {
		return err
	}
	// A pod made right after `berth up` needs its namespace's service
	// account, which the controller manager makes within seconds.
	if err := waitKubectl(ctx, binDir, kubeconfig, time.Minute, "default", "get", "serviceaccount", "default", "-o", "jsonpath={.metadata.name}"); err != nil {
		return fmt.Errorf("service account default/default: %w", err)
	}
	// Pods resolve Services by name from their first start: the control
	// plane's CoreDNS add-on must answer on kube-dns first.
	if err := watchKubectl(ctx, binDir, kubeconfig, 2*time.Minute, "an available replica", func(out string) bool {
		n, err := strconv.Atoi(out)
		return err == nil && n > 0
	}, "--namespace", "kube-system", "get", "deployments", "--field-selector", "metadata.name=coredns",
		"-o", `jsonpath={.status.availableReplicas}{"\n"}`); err != nil {
		return fmt.Errorf("coredns: %w", err)
	}
	dns, _ := kubectl(ctx, binDir, kubeconfig, "", "--namespace", "kube-system", "get", "service", "kube-dns", "-o", "jsonpath={.spec.clusterIP}")
	fmt.Fprintf(out, "coredns ready: Service kube-system/kube-dns on %s [%s]\n", bytes.TrimSpace(dns), since(o.start))
	return nil
}

// waitNodeReady waits until the Node is Ready and, unless since is zero,
// its kubelet has been heard from since `since`: after a restart the Node
// still shows the Ready of the kubelet before.
//
// A kubelet is heard from either way first: a new node's kubelet posts
// its Node's status as soon as it is ready, and makes its Lease only at
// its next renewal (10 s); a restarted kubelet renews its Lease at start,
// but on a Node it finds Ready it posts status only at its next period
// (10 s). So a restarted kubelet is taken as Ready by its Lease and the
// Node's standing condition: one it would find wrong it changes at that
// next period.
func waitNodeReady(ctx context.Context, binDir, kubeconfig, name string, since time.Time, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	if !since.IsZero() {
		hctx, cancel := context.WithCancel(ctx)
		heard := make(chan error, 2)
		go func() {
			heard <- watchKubectl(hctx, binDir, kubeconfig, timeout, "renewed since "+since.Format(time.RFC3339), func(out string) bool {
				t, err := time.Parse(time.RFC3339Nano, out)
				return err == nil && !t.Before(since)
			}, "--namespace", "kube-node-lease", "get", "leases", "--field-selector", "metadata.name="+name,
				"-o", `jsonpath={.spec.renewTime}{"\n"}`)
		}()
		go func() {
			heard <- watchKubectl(hctx, binDir, kubeconfig, timeout, "Ready since "+since.Format(time.RFC3339), func(out string) bool {
				status, beat, _ := strings.Cut(out, " ")
				t, err := time.Parse(time.RFC3339, beat)
				return status == "True" && err == nil && !t.Before(since.Truncate(time.Second))
			}, "get", "nodes", "--field-selector", "metadata.name="+name,
				"-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status} {.status.conditions[?(@.type=="Ready")].lastHeartbeatTime}{"\n"}`)
		}()
		err := <-heard
		if err != nil {
			err = <-heard // the other may still hear it
		}
		cancel()
		if err != nil {
			return fmt.Errorf("kubelet not heard from (Lease or Node status) since %s: %w", since.Format(time.RFC3339), err)
		}
	}
	return watchKubectl(ctx, binDir, kubeconfig, time.Until(deadline), "Ready", func(out string) bool { return out == "True" },
		"get", "nodes", "--field-selector", "metadata.name="+name,
		"-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}{"\n"}`)
}

// watchKubectl runs `kubectl ... --watch`, whose output has a line per
// version of the object, until ok accepts a line: it sees a change at
// once, where polling would see it up to a period late. A watch the
// server ends is started again.
func watchKubectl(ctx context.Context, binDir, kubeconfig string, timeout time.Duration, want string, ok func(string) bool, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last string
	for {
		found, err := func() (bool, error) {
			wctx, stop := context.WithCancel(ctx)
			defer stop()
			cmd := exec.CommandContext(wctx, filepath.Join(binDir, "kubectl"), append(append([]string{"--kubeconfig", kubeconfig}, args...), "--watch")...)
			cmd.WaitDelay = time.Second // for output a killed kubectl left open
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.StdoutPipe()
			if err != nil {
				return false, err
			}
			if err := cmd.Start(); err != nil {
				return false, fmt.Errorf("kubectl: %w", err)
			}
			lines := bufio.NewScanner(out)
			found := false
			for !found && lines.Scan() {
				last = strings.TrimSpace(lines.Text())
				found = ok(last)
			}
			stop()
			if err := cmd.Wait(); err != nil && !found && stderr.Len() > 0 {
				last = strings.TrimSpace(stderr.String())
			}
			return found, nil
		}()
		if err != nil || found {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kubectl %s: not %s after %s (last: %s)", strings.Join(args, " "), want, timeout, last)
		case <-time.After(time.Second):
		}
	}
}

// waitKubectl runs kubectl until it prints want.
func waitKubectl(ctx context.Context, binDir, kubeconfig string, timeout time.Duration, want string, args ...string) error {
	return pollKubectl(ctx, binDir, kubeconfig, timeout, fmt.Sprintf("%q", want), func(out string) bool { return out == want }, args...)
}

// pollKubectl runs kubectl every second until ok accepts its output.
func pollKubectl(ctx context.Context, binDir, kubeconfig string, timeout time.Duration, want string, ok func(string) bool, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last string
	for {
		out, err := kubectl(ctx, binDir, kubeconfig, "", args...)
		if err == nil && ok(strings.TrimSpace(string(out))) {
			return nil
		}
		last = strings.TrimSpace(string(out))
		if err != nil {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kubectl %s: not %s after %s (last: %s)", strings.Join(args, " "), want, timeout, last)
		case <-time.After(time.Second):
		}
	}
}
