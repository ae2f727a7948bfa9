// Package cloudnode is the node half of a cloud controller manager for
// EC2, as EKS runs the AWS one beside its control plane: kubelets started
// with --cloud-provider=external register their Node tainted
// node.cloudprovider.kubernetes.io/uninitialized, and only the cloud's
// node controller may initialize it (instance type, zone and region
// labels, addresses) and lift the taint; the lifecycle controller deletes
// the Nodes of terminated instances. The controllers are the upstream ones
// (k8s.io/cloud-provider); this package answers their questions from EC2.
package cloudnode

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
	v1 "k8s.io/api/core/v1"
	cloudprovider "k8s.io/cloud-provider"
)

// EC2 is the one call the provider makes.
type EC2 interface {
	DescribeInstances(ctx context.Context, in *ec2.DescribeInstancesInput, optFns ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error)
}

// Provider is a cloudprovider.Interface with InstancesV2 only: no load
// balancers, routes or zones (InstancesV2 answers zones).
type Provider struct {
	EC2    EC2
	Region string
}

var _ cloudprovider.Interface = (*Provider)(nil)

// ProviderName is "aws", the prefix of the nodes' provider IDs.
const ProviderName = "aws"

func (p *Provider) Initialize(cloudprovider.ControllerClientBuilder, <-chan struct{}) {}
func (p *Provider) LoadBalancer() (cloudprovider.LoadBalancer, bool)                  { return nil, false }
func (p *Provider) Instances() (cloudprovider.Instances, bool)                        { return nil, false }
func (p *Provider) InstancesV2() (cloudprovider.InstancesV2, bool)                    { return p, true }
func (p *Provider) Zones() (cloudprovider.Zones, bool)                                { return nil, false }
func (p *Provider) Clusters() (cloudprovider.Clusters, bool)                          { return nil, false }
func (p *Provider) Routes() (cloudprovider.Routes, bool)                              { return nil, false }
func (p *Provider) ProviderName() string                                              { return ProviderName }
func (p *Provider) HasClusterID() bool                                                { return false }

// InstanceID takes the instance ID from a provider ID: aws:///<zone>/<id>
// (what kubelet gets from berth-bootstrap and nodeadm) or aws://<id>.
func InstanceID(providerID string) (string, error) {
	rest, ok := strings.CutPrefix(providerID, ProviderName+"://")
	if !ok {
		return "", fmt.Errorf("provider ID %q: not aws://", providerID)
	}
	id := rest[strings.LastIndex(rest, "/")+1:]
	if !strings.HasPrefix(id, "i-") || len(id) < 3 {
		return "", fmt.Errorf("provider ID %q: no instance ID", providerID)
	}
	return id, nil
}

// instance finds the Node's instance; nil when EC2 does not know it.
func (p *Provider) instance(ctx context.Context, node *v1.Node) (*ec2types.Instance, error) {
	if node.Spec.ProviderID == "" {
		// kubelet of a berth or EKS node always sets it; the controllers
		// retry until it does.
		return nil, fmt.Errorf("node %s has no spec.providerID", node.Name)
	}
	id, err := InstanceID(node.Spec.ProviderID)
	if err != nil {
		return nil, err
	}
	return Lookup(ctx, p.EC2, id)
}

// Lookup describes one instance; nil when EC2 does not know it.
func Lookup(ctx context.Context, c EC2, id string) (*ec2types.Instance, error) {
	out, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode() == "InvalidInstanceID.NotFound" {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("describe instance %s: %w", id, err)
	}
	for _, r := range out.Reservations {
		for i := range r.Instances {
			if aws.ToString(r.Instances[i].InstanceId) == id {
				return &r.Instances[i], nil
			}
		}
	}
	return nil, nil
}

func state(i *ec2types.Instance) ec2types.InstanceStateName {
	if i.State == nil {
		return ""
	}
	return i.State.Name
}

// InstanceExists is false once the instance is gone or terminated: the
// lifecycle controller then deletes the Node.
func (p *Provider) InstanceExists(ctx context.Context, node *v1.Node) (bool, error) {
	i, err := p.instance(ctx, node)
	if err != nil || i == nil {
		return false, err
	}
	return state(i) != ec2types.InstanceStateNameTerminated, nil
}

// InstanceShutdown is true for a stopped instance, as the AWS cloud
// controller manager answers: the lifecycle controller then taints its
// Node node.cloudprovider.kubernetes.io/shutdown. A stopping one may still
// run its pods.
func (p *Provider) InstanceShutdown(ctx context.Context, node *v1.Node) (bool, error) {
	i, err := p.instance(ctx, node)
	if err != nil || i == nil {
		return false, err
	}
	return state(i) == ec2types.InstanceStateNameStopped, nil
}

// InstanceMetadata gives what the node controller writes on the Node: the
// addresses (the instance's private IPv4 address, the public one if any,
// the private DNS name as InternalDNS and Hostname), type, zone and region.
func (p *Provider) InstanceMetadata(ctx context.Context, node *v1.Node) (*cloudprovider.InstanceMetadata, error) {
	i, err := p.instance(ctx, node)
	if err != nil {
		return nil, err
	}
	if i == nil {
		return nil, cloudprovider.InstanceNotFound
	}
	zone := ""
	if i.Placement != nil {
		zone = aws.ToString(i.Placement.AvailabilityZone)
	}
	md := &cloudprovider.InstanceMetadata{
		ProviderID:   "aws:///" + zone + "/" + aws.ToString(i.InstanceId),
		InstanceType: string(i.InstanceType),
		Zone:         zone,
		Region:       p.Region,
	}
	if md.Region == "" && len(zone) > 1 {
		md.Region = zone[:len(zone)-1]
	}
	seen := map[string]bool{}
	add := func(t v1.NodeAddressType, a string) {
		if a != "" && !seen[string(t)+a] {
			seen[string(t)+a] = true
			md.NodeAddresses = append(md.NodeAddresses, v1.NodeAddress{Type: t, Address: a})
		}
	}
	// Only the primary address: the interfaces' secondary addresses are
	// pods'.
	add(v1.NodeInternalIP, aws.ToString(i.PrivateIpAddress))
	add(v1.NodeExternalIP, aws.ToString(i.PublicIpAddress))
	add(v1.NodeInternalDNS, aws.ToString(i.PrivateDnsName))
	add(v1.NodeHostName, aws.ToString(i.PrivateDnsName))
	add(v1.NodeExternalDNS, aws.ToString(i.PublicDnsName))
	return md, nil
}
