// Package cloud is ipamd's boundary to AWS, in two layers as the EBS CSI
// driver does it: EC2API lists the few SDK calls ipamd makes, and Cloud
// offers the domain operations the pool needs (create-and-attach an ENI,
// assign addresses) without SDK types. AWS error codes are translated here,
// once, into the package's sentinels.
package cloud

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/berth-io/berth/internal/instancetypes"
)

// Sentinels for the pool's decisions.
var (
	ErrSubnetExhausted = errors.New("subnet has no free addresses")
	ErrLimitExceeded   = errors.New("instance type limit reached")
	ErrThrottled       = errors.New("EC2 request limit exceeded")
	ErrNotFound        = errors.New("not found")
)

// translate maps an AWS error to a sentinel (keeping the AWS message).
func translate(op string, err error) error {
	if err == nil {
		return nil
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "InsufficientFreeAddressesInSubnet", "InsufficientCidrBlocks":
			return fmt.Errorf("%s: %s: %w", op, ae.ErrorMessage(), ErrSubnetExhausted)
		case "AttachmentLimitExceeded", "PrivateIpAddressLimitExceeded":
			return fmt.Errorf("%s: %s: %w", op, ae.ErrorMessage(), ErrLimitExceeded)
		case "RequestLimitExceeded", "Throttling":
			return fmt.Errorf("%s: %w", op, ErrThrottled)
		case "InvalidNetworkInterfaceID.NotFound", "InvalidAttachmentID.NotFound":
			return fmt.Errorf("%s: %s: %w", op, ae.ErrorMessage(), ErrNotFound)
		}
		return fmt.Errorf("%s: %s: %s", op, ae.ErrorCode(), ae.ErrorMessage())
	}
	return fmt.Errorf("%s: %w", op, err)
}

// EC2API is the part of the EC2 client ipamd uses.
type EC2API interface {
	CreateNetworkInterface(context.Context, *ec2.CreateNetworkInterfaceInput, ...func(*ec2.Options)) (*ec2.CreateNetworkInterfaceOutput, error)
	AttachNetworkInterface(context.Context, *ec2.AttachNetworkInterfaceInput, ...func(*ec2.Options)) (*ec2.AttachNetworkInterfaceOutput, error)
	ModifyNetworkInterfaceAttribute(context.Context, *ec2.ModifyNetworkInterfaceAttributeInput, ...func(*ec2.Options)) (*ec2.ModifyNetworkInterfaceAttributeOutput, error)
	DetachNetworkInterface(context.Context, *ec2.DetachNetworkInterfaceInput, ...func(*ec2.Options)) (*ec2.DetachNetworkInterfaceOutput, error)
	DeleteNetworkInterface(context.Context, *ec2.DeleteNetworkInterfaceInput, ...func(*ec2.Options)) (*ec2.DeleteNetworkInterfaceOutput, error)
	AssignPrivateIpAddresses(context.Context, *ec2.AssignPrivateIpAddressesInput, ...func(*ec2.Options)) (*ec2.AssignPrivateIpAddressesOutput, error)
	UnassignPrivateIpAddresses(context.Context, *ec2.UnassignPrivateIpAddressesInput, ...func(*ec2.Options)) (*ec2.UnassignPrivateIpAddressesOutput, error)
	DescribeNetworkInterfaces(context.Context, *ec2.DescribeNetworkInterfacesInput, ...func(*ec2.Options)) (*ec2.DescribeNetworkInterfacesOutput, error)
	DescribeSubnets(context.Context, *ec2.DescribeSubnetsInput, ...func(*ec2.Options)) (*ec2.DescribeSubnetsOutput, error)
	CreateTags(context.Context, *ec2.CreateTagsInput, ...func(*ec2.Options)) (*ec2.CreateTagsOutput, error)
}

var _ EC2API = (*ec2.Client)(nil)

// IMDSAPI is the part of the IMDS client ipamd uses.
type IMDSAPI interface {
	GetMetadata(context.Context, *imds.GetMetadataInput, ...func(*imds.Options)) (*imds.GetMetadataOutput, error)
	GetRegion(context.Context, *imds.GetRegionInput, ...func(*imds.Options)) (*imds.GetRegionOutput, error)
}

// Instance is what ipamd knows of its node.
type Instance struct {
	ID, Type, AZ, Region, VPCID string
	PrimaryMAC, PrimaryENI      string
	PrimaryIP                   netip.Addr
	SubnetID                    string
	SubnetCIDR                  netip.Prefix
	VPCCIDRs                    []netip.Prefix
	SecurityGroups              []string
	Info                        instancetypes.Info
}

// ENI is an interface attached to the node.
type ENI struct {
	ID, MAC, SubnetID string
	Device, Card      int
	SubnetCIDR        netip.Prefix
	PrimaryIP         netip.Addr
	Secondary         []netip.Addr
	Prefixes          []netip.Prefix
	Tags              map[string]string
	Attached          bool
	// InterfaceType is EC2's: "interface", "efa", "efa-only", "trunk", ...
	InterfaceType string
}

// Cloud is ipamd's AWS boundary.
type Cloud interface {
	Instance() Instance
	// AttachedENIs lists the node's ENIs from EC2.
	AttachedENIs(ctx context.Context) ([]ENI, error)
	// MetadataENIs lists the node's ENIs as IMDS shows them (possibly stale).
	MetadataENIs(ctx context.Context) ([]ENI, error)
	CreateENI(ctx context.Context, req CreateENIRequest) (ENI, error)
	AssignIPs(ctx context.Context, eniID string, n int) ([]netip.Addr, error)
	AssignPrefixes(ctx context.Context, eniID string, n int) ([]netip.Prefix, error)
	UnassignIPs(ctx context.Context, eniID string, ips []netip.Addr) error
	UnassignPrefixes(ctx context.Context, eniID string, p []netip.Prefix) error
	FreeENI(ctx context.Context, eniID string) error
	// LeakedENIs lists available ENIs that ipamd or the VPC CNI on any node
	// of the VPC (and cluster, when set) created over 5 minutes ago.
	LeakedENIs(ctx context.Context) ([]string, error)
	DeleteENI(ctx context.Context, eniID string) error
	// CNISubnets lists the subnets of the node's VPC and AZ, most free first.
	CNISubnets(ctx context.Context) ([]Subnet, error)
}

// CreateENIRequest describes a new ENI.
type CreateENIRequest struct {
	SubnetID       string
	SecurityGroups []string
	Device         int
	Card           int // network card index: 0 but for multi-NIC pods' ENIs
	IPs            int // secondary addresses
	Prefixes       int
	Tags           map[string]string
}

// Subnet is a subnet ipamd may use.
type Subnet struct {
	ID        string
	CIDR      netip.Prefix
	Available int
	Tags      map[string]string
}

// InstanceIDTag is the tag ipamd puts on every ENI it creates.
const InstanceIDTag = "node.k8s.amazonaws.com/instance_id"

// CreatedAtTag records when (RFC 3339).
const CreatedAtTag = "node.k8s.amazonaws.com/createdAt"

// AWS implements Cloud with aws-sdk-go-v2.
type AWS struct {
	ec2  EC2API
	imds IMDSAPI
	inst Instance
	log  *slog.Logger
	now  func() time.Time

	m Metrics

	// cluster is CLUSTER_NAME ("" when unset): ENIs are tagged with it and
	// the leaked-ENI cleanup keeps to them.
	cluster string
}

var _ Cloud = (*AWS)(nil)

// Metrics are the awscni_* AWS metrics, with the VPC CNI's names, types
// and labels (utils/prometheusmetrics/prometheusmetrics.go).
type Metrics struct {
	Calls   *prometheus.CounterVec // {fn}
	Errors  *prometheus.CounterVec // {fn}
	Latency *prometheus.SummaryVec // {api, error, status}
	// APIErrors counts calls AWS answered with an error code: {api, error}.
	APIErrors *prometheus.CounterVec
	// UtilsErrors counts AWS errors of cleanups that could not be
	// handled (the ENI is left to the leaked-ENI cleanup): {fn, error}.
	UtilsErrors *prometheus.CounterVec
}

// NewMetrics registers the EC2 call metrics on reg.
func NewMetrics(reg prometheus.Registerer) Metrics {
	m := Metrics{
		Calls:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "awscni_ec2api_req_count", Help: "The number of calls made to EC2"}, []string{"fn"}),
		Errors:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "awscni_ec2api_error_count", Help: "The number of failed EC2 calls"}, []string{"fn"}),
		Latency: prometheus.NewSummaryVec(prometheus.SummaryOpts{Name: "awscni_aws_api_latency_ms", Help: "AWS API call latency in ms"}, []string{"api", "error", "status"}),
		APIErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "awscni_aws_api_error_count", Help: "The number of times AWS API returns an error"},
			[]string{"api", "error"}),
		UtilsErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "awscni_aws_utils_error_count", Help: "The number of errors not handled in awsutils library"},
			[]string{"fn", "error"}),
	}
	reg.MustRegister(m.Calls, m.Errors, m.Latency, m.APIErrors, m.UtilsErrors)
	return m
}

// Load discovers the instance through IMDS with the default SDK
// configuration (so AWS_ENDPOINT_URL and AWS_EC2_METADATA_SERVICE_ENDPOINT
// apply) and returns a Cloud for it.
//
// ec2Endpoint, when not "", is the EC2 endpoint (the VPC CNI's
// AWS_EC2_ENDPOINT, for VPC endpoints and partitions the SDK does not
// know); it wins over AWS_ENDPOINT_URL for EC2 alone. httpTimeout bounds
// each request (the VPC CNI's HTTP_TIMEOUT): a black-holed endpoint must
// not hold the pool's EC2 lock forever.
func Load(ctx context.Context, log *slog.Logger, m Metrics, ec2Endpoint string, httpTimeout time.Duration) (*AWS, error) {
	cfg, err := config.LoadDefaultConfig(ctx, config.WithHTTPClient(HTTPClient(httpTimeout)), config.WithRetryer(Retryer))
	if err != nil {
		return nil, fmt.Errorf("load AWS config: %w", err)
	}
	md := imds.NewFromConfig(cfg)
	if cfg.Region == "" {
		r, err := md.GetRegion(ctx, &imds.GetRegionInput{})
		if err != nil {
			return nil, fmt.Errorf("region from IMDS: %w", err)
		}
		cfg.Region = r.Region
	}
	client := ec2.NewFromConfig(cfg, func(o *ec2.Options) {
		if ec2Endpoint != "" {
			o.BaseEndpoint = aws.String(ec2Endpoint)
		}
	})
	return New(ctx, client, md, cfg.Region, log, m)
}

// Retryer retries EC2 calls with jittered exponential backoff, patient
// with throttling, without the client-side retry quota that would turn a
// throttled burst into hard failures. A request that timed out is not
// retried here: twelve of them would hold the pool's EC2 lock for minutes
// against a black-holed endpoint, and a timed-out AssignPrivateIpAddresses
// may have been applied (it has no client token). The pool tries again
// after a short backoff, and reconcile adopts what was applied.
func Retryer() aws.Retryer {
	return retry.NewStandard(func(o *retry.StandardOptions) {
		o.MaxAttempts = 12
		o.MaxBackoff = 10 * time.Second
		o.RateLimiter = ratelimit.None
		o.Retryables = append([]retry.IsErrorRetryable{retry.IsErrorRetryableFunc(func(err error) aws.Ternary {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return aws.FalseTernary
			}
			return aws.UnknownTernary
		})}, o.Retryables...)
	})
}

// HTTPClient is the SDK's HTTP client with each request bounded by timeout.
func HTTPClient(timeout time.Duration) *awshttp.BuildableClient {
	return awshttp.NewBuildableClient().WithTimeout(timeout)
}

// New builds a Cloud from clients (tests pass clients aimed at localcloud).
func New(ctx context.Context, e EC2API, md IMDSAPI, region string, log *slog.Logger, m Metrics) (*AWS, error) {
	c := &AWS{ec2: e, imds: md, log: log, now: time.Now, m: m}
	if err := c.discover(ctx, region); err != nil {
		return nil, err
	}
	return c, nil
}

// Instance returns the node's facts.
func (c *AWS) Instance() Instance { return c.inst }

// meta reads one IMDS path, retrying briefly (IMDS can lag at boot).
func (c *AWS) meta(ctx context.Context, path string) (string, error) {
	var last error
	for attempt := 0; attempt < 5; attempt++ {
		start := c.now()
		out, err := c.imds.GetMetadata(ctx, &imds.GetMetadataInput{Path: path})
		c.observe("GetMetadata", start, err)
		if err == nil {
			defer out.Content.Close()
			b := new(strings.Builder)
			buf := make([]byte, 4096)
			for {
				n, rerr := out.Content.Read(buf)
				b.Write(buf[:n])
				if rerr != nil {
					break
				}
			}
			return strings.TrimSpace(b.String()), nil
		}
		last = err
		var re interface{ HTTPStatusCode() int }
		if errors.As(err, &re) && re.HTTPStatusCode() == 404 {
			return "", fmt.Errorf("imds %s: %w", path, ErrNotFound)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(time.Duration(100<<attempt) * time.Millisecond):
		}
		c.log.Debug("imds retry", "path", path, "err", err)
	}
	return "", fmt.Errorf("imds %s: %w", path, last)
}

func (c *AWS) discover(ctx context.Context, region string) error {
	get := func(path string) (string, error) { return c.meta(ctx, path) }
	var err error
	in := Instance{Region: region}
	if in.ID, err = get("instance-id"); err != nil {
		return err
	}
	if in.Type, err = get("instance-type"); err != nil {
		return err
	}
	if in.AZ, err = get("placement/availability-zone"); err != nil {
		return err
	}
	if in.PrimaryMAC, err = get("mac"); err != nil {
		return err
	}
	p := "network/interfaces/macs/" + in.PrimaryMAC + "/"
	if in.PrimaryENI, err = get(p + "interface-id"); err != nil {
		return err
	}
	if in.SubnetID, err = get(p + "subnet-id"); err != nil {
		return err
	}
	if in.VPCID, err = get(p + "vpc-id"); err != nil {
		return err
	}
	ip, err := get("local-ipv4")
	if err != nil {
		return err
	}
	if in.PrimaryIP, err = netip.ParseAddr(ip); err != nil {
		return fmt.Errorf("imds local-ipv4 %q: %w", ip, err)
	}
	cidr, err := get(p + "subnet-ipv4-cidr-block")
	if err != nil {
		return err
	}
	if in.SubnetCIDR, err = netip.ParsePrefix(cidr); err != nil {
		return fmt.Errorf("imds subnet cidr %q: %w", cidr, err)
	}
	if in.VPCCIDRs, err = c.vpcCIDRs(ctx, in.PrimaryMAC); err != nil {
		return err
	}
	sgs, err := get(p + "security-group-ids")
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	in.SecurityGroups = strings.Fields(sgs)
	info, ok := instancetypes.Lookup(in.Type)
	if !ok {
		return fmt.Errorf("instance type %s is not in the instance-type table", in.Type)
	}
	in.Info = info
	c.inst = in
	c.log.Info("discovered instance", "instance", in.ID, "type", in.Type, "az", in.AZ, "primaryENI", in.PrimaryENI, "ip", in.PrimaryIP)
	return nil
}

// call times and counts one EC2 call.
func (c *AWS) call(fn string, f func() error) error {
	start := c.now()
	err := f()
	c.observe(fn, start, err)
	if c.m.Calls != nil {
		c.m.Calls.WithLabelValues(fn).Inc()
		if err != nil {
			c.m.Errors.WithLabelValues(fn).Inc()
		}
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		if c.m.APIErrors != nil {
			c.m.APIErrors.WithLabelValues(fn, ae.ErrorCode()).Inc()
		}
		return awsError{translate(fn, err), ae}
	}
	return translate(fn, err)
}

// observe records an AWS call's latency in milliseconds, labelled as the
// VPC CNI does: error "true"/"false", status "200" on success, else the
// AWS error code ("" when AWS did not answer).
func (c *AWS) observe(api string, start time.Time, err error) {
	if c.m.Latency == nil {
		return
	}
	status := "200"
	if err != nil {
		status = ""
		var ae smithy.APIError
		if errors.As(err, &ae) {
			status = ae.ErrorCode()
		}
	}
	c.m.Latency.WithLabelValues(api, strconv.FormatBool(err != nil), status).Observe(float64(c.now().Sub(start).Milliseconds()))
}

// awsError is a translated error that still carries the AWS error it
// came from, so cleanups can tell an AWS refusal from a cancelled context.
type awsError struct {
	error
	aws smithy.APIError
}

func (e awsError) Unwrap() []error { return []error{e.error, e.aws} }

// utilsError counts a cleanup AWS refused (awscni_aws_utils_error_count;
// like the VPC CNI, other failures are not counted). The error label is
// the AWS error code, not the message, whose request and resource IDs
// would make a new series of every failure.
func (c *AWS) utilsError(fn string, err error) {
	var ae smithy.APIError
	if c.m.UtilsErrors != nil && errors.As(err, &ae) {
		c.m.UtilsErrors.WithLabelValues(fn, ae.ErrorCode()).Inc()
	}
}

func toENI(n types.NetworkInterface) ENI {
	e := ENI{ID: aws.ToString(n.NetworkInterfaceId), MAC: aws.ToString(n.MacAddress), SubnetID: aws.ToString(n.SubnetId), Tags: map[string]string{},
		InterfaceType: string(n.InterfaceType)}
	if a := n.Attachment; a != nil {
		e.Device, e.Card = int(aws.ToInt32(a.DeviceIndex)), int(aws.ToInt32(a.NetworkCardIndex))
		e.Attached = a.Status == types.AttachmentStatusAttached
	}
	for _, ip := range n.PrivateIpAddresses {
		a, err := netip.ParseAddr(aws.ToString(ip.PrivateIpAddress))
		if err != nil {
			continue
		}
		if aws.ToBool(ip.Primary) {
			e.PrimaryIP = a
		} else {
			e.Secondary = append(e.Secondary, a)
		}
	}
	for _, p := range n.Ipv4Prefixes {
		if pp, err := netip.ParsePrefix(aws.ToString(p.Ipv4Prefix)); err == nil {
			e.Prefixes = append(e.Prefixes, pp)
		}
	}
	for _, t := range n.TagSet {
		e.Tags[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return e
}

// AttachedENIs lists the node's ENIs from EC2.
func (c *AWS) AttachedENIs(ctx context.Context) ([]ENI, error) {
	var out []ENI
	in := &ec2.DescribeNetworkInterfacesInput{Filters: []types.Filter{{Name: aws.String("attachment.instance-id"), Values: []string{c.inst.ID}}}}
	p := ec2.NewDescribeNetworkInterfacesPaginator(c.ec2, in)
	for p.HasMorePages() {
		var page *ec2.DescribeNetworkInterfacesOutput
		err := c.call("DescribeNetworkInterfaces", func() (err error) { page, err = p.NextPage(ctx); return err })
		if err != nil {
			return nil, err
		}
		for _, n := range page.NetworkInterfaces {
			out = append(out, toENI(n))
		}
	}
	if err := c.fillSubnets(ctx, out); err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Device < out[j].Device })
	return out, nil
}

func (c *AWS) fillSubnets(ctx context.Context, enis []ENI) error {
	need := map[string]bool{}
	for _, e := range enis {
		if e.SubnetID == c.inst.SubnetID {
			continue
		}
		need[e.SubnetID] = true
	}
	cidrs := map[string]netip.Prefix{c.inst.SubnetID: c.inst.SubnetCIDR}
	if len(need) > 0 {
		ids := make([]string, 0, len(need))
		for id := range need {
			ids = append(ids, id)
		}
		var out *ec2.DescribeSubnetsOutput
		if err := c.call("DescribeSubnets", func() (err error) {
			out, err = c.ec2.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{SubnetIds: ids})
			return err
		}); err != nil {
			return err
		}
		for _, s := range out.Subnets {
			if p, err := netip.ParsePrefix(aws.ToString(s.CidrBlock)); err == nil {
				cidrs[aws.ToString(s.SubnetId)] = p
			}
		}
	}
	for i := range enis {
		enis[i].SubnetCIDR = cidrs[enis[i].SubnetID]
	}
	return nil
}

// VPCCIDRs reads the VPC's IPv4 CIDRs from IMDS now: CIDRs can be
// associated with a VPC after the node started.
func (c *AWS) VPCCIDRs(ctx context.Context) ([]netip.Prefix, error) {
	return c.vpcCIDRs(ctx, c.inst.PrimaryMAC)
}

func (c *AWS) vpcCIDRs(ctx context.Context, mac string) ([]netip.Prefix, error) {
	vpcs, err := c.meta(ctx, "network/interfaces/macs/"+mac+"/vpc-ipv4-cidr-blocks")
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, s := range strings.Fields(vpcs) {
		v, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("imds vpc cidr %q: %w", s, err)
		}
		out = append(out, v)
	}
	return out, nil
}

// MetadataENIs reads the ENIs IMDS lists.
func (c *AWS) MetadataENIs(ctx context.Context) ([]ENI, error) {
	macs, err := c.meta(ctx, "network/interfaces/macs/")
	if err != nil {
		return nil, err
	}
	var out []ENI
	for _, m := range strings.Fields(macs) {
		mac := strings.TrimSuffix(m, "/")
		p := "network/interfaces/macs/" + mac + "/"
		e := ENI{MAC: mac, Attached: true}
		if e.ID, err = c.meta(ctx, p+"interface-id"); err != nil {
			return nil, err
		}
		dev, err := c.meta(ctx, p+"device-number")
		if err != nil {
			return nil, err
		}
		e.Device, _ = strconv.Atoi(dev)
		ips, err := c.meta(ctx, p+"local-ipv4s")
		if err != nil {
			return nil, err
		}
		for i, s := range strings.Fields(ips) {
			a, err := netip.ParseAddr(s)
			if err != nil {
				continue
			}
			if i == 0 {
				e.PrimaryIP = a
			} else {
				e.Secondary = append(e.Secondary, a)
			}
		}
		// The network card and the subnet, for managing ENIs from IMDS
		// alone (ENABLE_IMDS_ONLY_MODE): ENIs on other cards are not ipamd's.
		if card, err := c.meta(ctx, p+"network-card"); err == nil {
			e.Card, _ = strconv.Atoi(strings.TrimSpace(card))
		} else if !errors.Is(err, ErrNotFound) {
			return nil, err
		}
		if sub, err := c.meta(ctx, p+"subnet-ipv4-cidr-block"); err == nil {
			e.SubnetCIDR, _ = netip.ParsePrefix(strings.TrimSpace(sub))
		} else if !errors.Is(err, ErrNotFound) {
			return nil, err
		}
		if id, err := c.meta(ctx, p+"subnet-id"); err == nil {
			e.SubnetID = strings.TrimSpace(id)
		} else if !errors.Is(err, ErrNotFound) {
			return nil, err
		}
		if pfx, err := c.meta(ctx, p+"ipv4-prefix"); err == nil {
			for _, s := range strings.Fields(pfx) {
				if pp, err := netip.ParsePrefix(s); err == nil {
					e.Prefixes = append(e.Prefixes, pp)
				}
			}
		} else if !errors.Is(err, ErrNotFound) {
			return nil, err
		}
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Device < out[j].Device })
	return out, nil
}

// CreateENI creates, tags, attaches and configures a new ENI and waits for
// the attachment; on failure it deletes what it made.
func (c *AWS) CreateENI(ctx context.Context, r CreateENIRequest) (eni ENI, err error) {
	tags := []types.Tag{
		{Key: aws.String(InstanceIDTag), Value: aws.String(c.inst.ID)},
		{Key: aws.String(CreatedAtTag), Value: aws.String(c.now().UTC().Format(time.RFC3339))},
	}
	if c.cluster != "" {
		tags = append(tags, types.Tag{Key: aws.String(ClusterNameTag), Value: aws.String(c.cluster)},
			types.Tag{Key: aws.String(OwnerTag), Value: aws.String(OwnerTagValue)})
	}
	keys := make([]string, 0, len(r.Tags))
	for k := range r.Tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		tags = append(tags, types.Tag{Key: aws.String(k), Value: aws.String(r.Tags[k])})
	}
	in := &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String(r.SubnetID), Groups: r.SecurityGroups,
		Description:       aws.String("aws-K8S-" + c.inst.ID),
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeNetworkInterface, Tags: tags}}}
	if r.IPs > 0 {
		in.SecondaryPrivateIpAddressCount = aws.Int32(int32(r.IPs))
	}
	if r.Prefixes > 0 {
		in.Ipv4PrefixCount = aws.Int32(int32(r.Prefixes))
	}
	var created *ec2.CreateNetworkInterfaceOutput
	if err := c.call("CreateNetworkInterface", func() (err error) { created, err = c.ec2.CreateNetworkInterface(ctx, in); return err }); err != nil {
		return ENI{}, err
	}
	id := aws.ToString(created.NetworkInterface.NetworkInterfaceId)
	defer func() {
		if err != nil {
			// Best effort: never leave a half-made ENI behind.
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			if derr := c.FreeENI(cctx, id); derr != nil {
				c.utilsError("AllocENIDeleteErr", derr)
				c.log.Error("clean up a failed ENI (the hourly leaked-ENI cleanup will retry)", "eni", id, "err", derr)
			}
		}
	}()
	var att *ec2.AttachNetworkInterfaceOutput
	if err := c.call("AttachNetworkInterface", func() (err error) {
		att, err = c.ec2.AttachNetworkInterface(ctx, &ec2.AttachNetworkInterfaceInput{NetworkInterfaceId: aws.String(id),
			InstanceId: aws.String(c.inst.ID), DeviceIndex: aws.Int32(int32(r.Device)), NetworkCardIndex: aws.Int32(int32(r.Card))})
		return err
	}); err != nil {
		return ENI{}, err
	}
	if err := c.call("ModifyNetworkInterfaceAttribute", func() error {
		_, err := c.ec2.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{NetworkInterfaceId: aws.String(id),
			Attachment: &types.NetworkInterfaceAttachmentChanges{AttachmentId: att.AttachmentId, DeleteOnTermination: aws.Bool(true)}})
		return err
	}); err != nil {
		return ENI{}, err
	}
	// Wait for "attached": about 1–3 s on EC2, bounded: an attachment that
	// never completes must not hold the pool's EC2 lock, and with it every
	// ADD, for good. The deferred FreeENI removes the ENI.
	delay := 200 * time.Millisecond
	deadline := time.Now().Add(attachWait)
	for {
		var d *ec2.DescribeNetworkInterfacesOutput
		if err := c.call("DescribeNetworkInterfaces", func() (err error) {
			d, err = c.ec2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{id}})
			return err
		}); err != nil {
			return ENI{}, err
		}
		if len(d.NetworkInterfaces) == 1 {
			eni = toENI(d.NetworkInterfaces[0])
			if eni.Attached {
				break
			}
		}
		if time.Now().After(deadline) {
			return ENI{}, fmt.Errorf("wait for %s to attach: not attached after %s", id, attachWait)
		}
		select {
		case <-ctx.Done():
			return ENI{}, fmt.Errorf("wait for %s to attach: %w", id, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(delay*2, 2*time.Second)
	}
	es := []ENI{eni}
	if err := c.fillSubnets(ctx, es); err != nil {
		return ENI{}, err
	}
	return es[0], nil
}

// AssignIPs asks for n more secondary addresses in one call.
func (c *AWS) AssignIPs(ctx context.Context, eniID string, n int) ([]netip.Addr, error) {
	var out *ec2.AssignPrivateIpAddressesOutput
	if err := c.call("AssignPrivateIpAddresses", func() (err error) {
		out, err = c.ec2.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(eniID), SecondaryPrivateIpAddressCount: aws.Int32(int32(n))})
		return err
	}); err != nil {
		return nil, err
	}
	var ips []netip.Addr
	for _, a := range out.AssignedPrivateIpAddresses {
		if ip, err := netip.ParseAddr(aws.ToString(a.PrivateIpAddress)); err == nil {
			ips = append(ips, ip)
		}
	}
	return ips, nil
}

// AssignPrefixes asks for n /28 prefixes in one call.
func (c *AWS) AssignPrefixes(ctx context.Context, eniID string, n int) ([]netip.Prefix, error) {
	var out *ec2.AssignPrivateIpAddressesOutput
	if err := c.call("AssignPrivateIpAddresses", func() (err error) {
		out, err = c.ec2.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(eniID), Ipv4PrefixCount: aws.Int32(int32(n))})
		return err
	}); err != nil {
		return nil, err
	}
	var ps []netip.Prefix
	for _, a := range out.AssignedIpv4Prefixes {
		if p, err := netip.ParsePrefix(aws.ToString(a.Ipv4Prefix)); err == nil {
			ps = append(ps, p)
		}
	}
	return ps, nil
}

// UnassignIPs returns addresses to the subnet.
func (c *AWS) UnassignIPs(ctx context.Context, eniID string, ips []netip.Addr) error {
	s := make([]string, len(ips))
	for i, a := range ips {
		s[i] = a.String()
	}
	return c.call("UnassignPrivateIpAddresses", func() error {
		_, err := c.ec2.UnassignPrivateIpAddresses(ctx, &ec2.UnassignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(eniID), PrivateIpAddresses: s})
		return err
	})
}

// UnassignPrefixes returns prefixes to the subnet.
func (c *AWS) UnassignPrefixes(ctx context.Context, eniID string, ps []netip.Prefix) error {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return c.call("UnassignPrivateIpAddresses", func() error {
		_, err := c.ec2.UnassignPrivateIpAddresses(ctx, &ec2.UnassignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(eniID), Ipv4Prefixes: s})
		return err
	})
}

// FreeENI detaches (if attached), waits, and deletes an ENI.
func (c *AWS) FreeENI(ctx context.Context, eniID string) error {
	var d *ec2.DescribeNetworkInterfacesOutput
	if err := c.call("DescribeNetworkInterfaces", func() (err error) {
		d, err = c.ec2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{eniID}})
		return err
	}); err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		c.utilsError("getENIAttachmentIDFailed", err)
		return err
	}
	if len(d.NetworkInterfaces) == 1 && d.NetworkInterfaces[0].Attachment != nil && d.NetworkInterfaces[0].Attachment.AttachmentId != nil {
		if err := c.call("DetachNetworkInterface", func() error {
			_, err := c.ec2.DetachNetworkInterface(ctx, &ec2.DetachNetworkInterfaceInput{AttachmentId: d.NetworkInterfaces[0].Attachment.AttachmentId})
			return err
		}); err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
	}
	delay := 200 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := c.DeleteENI(ctx, eniID)
		if err == nil || errors.Is(err, ErrNotFound) {
			return nil
		}
		if !strings.Contains(err.Error(), "InUse") {
			c.utilsError("FreeENIDeleteErr", err)
			return err
		}
		if attempt == deleteAttempts {
			// A detachment stuck in "detaching": the leaked-ENI cleanup
			// deletes the ENI once it is available.
			c.utilsError("FreeENIDeleteErr", err)
			return fmt.Errorf("delete %s: still in use after %d attempts: %w", eniID, attempt, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s to detach: %w", eniID, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(delay*2, 2*time.Second)
	}
}

// attachWait bounds the wait for a new ENI's attachment, and
// deleteAttempts FreeENI's deletes while EC2 still sees the ENI attached
// (the VPC CNI makes 20), so that neither holds the pool for good.
const (
	attachWait     = time.Minute
	deleteAttempts = 20
)

// DeleteENI deletes a detached ENI.
func (c *AWS) DeleteENI(ctx context.Context, eniID string) error {
	return c.call("DeleteNetworkInterface", func() error {
		_, err := c.ec2.DeleteNetworkInterface(ctx, &ec2.DeleteNetworkInterfaceInput{NetworkInterfaceId: aws.String(eniID)})
		return err
	})
}

// The VPC CNI's tags for ENIs of a cluster (when CLUSTER_NAME is set).
const (
	ClusterNameTag = "cluster.k8s.amazonaws.com/name"
	OwnerTag       = "eks:eni:owner"
	OwnerTagValue  = "amazon-vpc-cni"
)

// leakedENIGrace is how old an ENI must be before the cleanup deletes it:
// younger ones may be on their way to being attached.
const leakedENIGrace = 5 * time.Minute

// SetClusterName sets CLUSTER_NAME; call it before any other method.
func (c *AWS) SetClusterName(name string) { c.cluster = name }

// LeakedENIs lists the ENIs the VPC CNI would delete as leaked: available
// ENIs of this VPC carrying the instance-ID tag of any node (a node that
// was terminated mid-attach cannot clean up its own) and, with CLUSTER_NAME,
// this cluster's tag; described "aws-K8S-"; created over 5 minutes ago.
// An ENI without a readable createdAt tag is tagged with the current time
// and left for a later run: an older CNI may be attaching it right now.
func (c *AWS) LeakedENIs(ctx context.Context) ([]string, error) {
	filters := []types.Filter{
		{Name: aws.String("tag-key"), Values: []string{InstanceIDTag}},
		{Name: aws.String("status"), Values: []string{string(types.NetworkInterfaceStatusAvailable)}},
		{Name: aws.String("vpc-id"), Values: []string{c.inst.VPCID}},
	}
	if c.cluster != "" {
		filters = append(filters, types.Filter{Name: aws.String("tag:" + ClusterNameTag), Values: []string{c.cluster}})
	}
	in := &ec2.DescribeNetworkInterfacesInput{Filters: filters, MaxResults: aws.Int32(1000)}
	var out []string
	p := ec2.NewDescribeNetworkInterfacesPaginator(c.ec2, in)
	for p.HasMorePages() {
		var page *ec2.DescribeNetworkInterfacesOutput
		if err := c.call("DescribeNetworkInterfaces", func() (err error) { page, err = p.NextPage(ctx); return err }); err != nil {
			return nil, err
		}
		for _, n := range page.NetworkInterfaces {
			if !strings.HasPrefix(aws.ToString(n.Description), "aws-K8S-") {
				continue
			}
			e := toENI(n)
			created, err := time.Parse(time.RFC3339, e.Tags[CreatedAtTag])
			if err != nil {
				c.tagCreatedAt(ctx, e.ID)
				continue
			}
			if c.now().Sub(created) < leakedENIGrace {
				continue
			}
			out = append(out, e.ID)
		}
	}
	return out, nil
}

// tagCreatedAt starts an ENI's grace period now. A failure only delays the
// ENI's deletion to a later run, so it is logged, not returned.
func (c *AWS) tagCreatedAt(ctx context.Context, eniID string) {
	err := c.call("CreateTags", func() error {
		_, err := c.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{eniID},
			Tags: []types.Tag{{Key: aws.String(CreatedAtTag), Value: aws.String(c.now().UTC().Format(time.RFC3339))}}})
		return err
	})
	if err != nil {
		c.log.Warn("tag a possibly leaked ENI with its discovery time", "eni", eniID, "err", err)
		return
	}
	c.log.Info("ENI without a readable createdAt tag: tagged now, deleted in a later run if still unused", "eni", eniID)
}

// CNISubnets lists the subnets of the node's VPC and AZ with their tags,
// most free first; the pool picks by kubernetes.io/role/cni.
func (c *AWS) CNISubnets(ctx context.Context) ([]Subnet, error) {
	// Every page: a tagged subnet on the second must not be missed.
	var all []types.Subnet
	p := ec2.NewDescribeSubnetsPaginator(c.ec2, &ec2.DescribeSubnetsInput{Filters: []types.Filter{
		{Name: aws.String("vpc-id"), Values: []string{c.inst.VPCID}},
		{Name: aws.String("availability-zone"), Values: []string{c.inst.AZ}},
	}})
	for p.HasMorePages() {
		var page *ec2.DescribeSubnetsOutput
		if err := c.call("DescribeSubnets", func() (err error) { page, err = p.NextPage(ctx); return err }); err != nil {
			return nil, err
		}
		all = append(all, page.Subnets...)
	}
	var subs []Subnet
	for _, s := range all {
		p, err := netip.ParsePrefix(aws.ToString(s.CidrBlock))
		if err != nil {
			continue
		}
		sub := Subnet{ID: aws.ToString(s.SubnetId), CIDR: p, Available: int(aws.ToInt32(s.AvailableIpAddressCount)), Tags: map[string]string{}}
		for _, t := range s.Tags {
			sub.Tags[aws.ToString(t.Key)] = aws.ToString(t.Value)
		}
		subs = append(subs, sub)
	}
	sort.Slice(subs, func(i, j int) bool { return subs[i].Available > subs[j].Available })
	return subs, nil
}
