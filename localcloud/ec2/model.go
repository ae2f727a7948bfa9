package ec2

import (
	"strings"
	"time"
)

// State is everything EC2 knows, persisted as one JSON document.
type State struct {
	VPCs           map[string]*VPC           `json:"vpcs"`
	Subnets        map[string]*Subnet        `json:"subnets"`
	SecurityGroups map[string]*SecurityGroup `json:"securityGroups"`
	Instances      map[string]*Instance      `json:"instances"`
	ENIs           map[string]*ENI           `json:"enis"`
	Volumes        map[string]*Volume        `json:"volumes"`
	Snapshots      map[string]*Snapshot      `json:"snapshots"`
	// TrunkAssociations are branch ENIs carried on a trunk ENI's VLANs.
	TrunkAssociations map[string]*TrunkAssociation `json:"trunkAssociations"`
	// ClientTokens maps "<Action>/<token>" to the ID of what that call
	// created, for idempotent retries.
	ClientTokens map[string]string `json:"clientTokens"`
}

func newState() *State {
	return &State{
		VPCs:           map[string]*VPC{},
		Subnets:        map[string]*Subnet{},
		SecurityGroups: map[string]*SecurityGroup{},
		Instances:      map[string]*Instance{},
		ENIs:           map[string]*ENI{},
		Volumes:        map[string]*Volume{},
		Snapshots:      map[string]*Snapshot{},
		ClientTokens:   map[string]string{},

		TrunkAssociations: map[string]*TrunkAssociation{},
	}
}

// Tags are a resource's tags.
type Tags map[string]string

// VPC is a virtual private cloud.
type VPC struct {
	ID   string `json:"id"`
	CIDR string `json:"cidr"` // the primary IPv4 block
	// Secondary holds the IPv4 blocks AssociateVpcCidrBlock added.
	Secondary []CIDRAssociation `json:"secondaryCidrs,omitempty"`
	IPv6CIDR  string            `json:"ipv6Cidr,omitempty"`
	IsDefault bool              `json:"isDefault"`
	Tags      Tags              `json:"tags"`
	// ipv6Next counts IPv6 /64s handed to subnets.
	IPv6Next int `json:"ipv6Next"`
}

// CIDRAssociation is a secondary IPv4 block of a VPC.
type CIDRAssociation struct {
	ID   string `json:"id"`
	CIDR string `json:"cidr"`
}

// associations is the VPC's IPv4 blocks with their association IDs, the
// primary first.
func (v *VPC) associations() []CIDRAssociation {
	return append([]CIDRAssociation{{ID: v.primaryAssociation(), CIDR: v.CIDR}}, v.Secondary...)
}

// IPv4CIDRs is the VPC's IPv4 blocks, the primary first.
func (v *VPC) IPv4CIDRs() []string {
	var out []string
	for _, a := range v.associations() {
		out = append(out, a.CIDR)
	}
	return out
}

// primaryAssociation is the association ID of the VPC's primary block.
func (v *VPC) primaryAssociation() string {
	return "vpc-cidr-assoc-" + strings.TrimPrefix(v.ID, "vpc-")
}

// ipv6Association is the association ID of the VPC's IPv6 block: the
// primary block's with its first hex digit moved on by one, so the two
// never meet (a fixed "6" in its place did, for every VPC whose ID starts
// with 6) and the ID keeps the others' length.
func (v *VPC) ipv6Association() string {
	id := []byte(strings.TrimPrefix(v.ID, "vpc-"))
	if len(id) > 0 {
		const hex = "0123456789abcdef"
		id[0] = hex[(strings.IndexByte(hex, id[0])+1)%16]
	}
	return "vpc-cidr-assoc-" + string(id)
}

// Subnet is a subnet of a VPC in one availability zone.
type Subnet struct {
	ID       string `json:"id"`
	VPCID    string `json:"vpcId"`
	CIDR     string `json:"cidr"`
	IPv6CIDR string `json:"ipv6Cidr,omitempty"`
	AZ       string `json:"az"`
	Tags     Tags   `json:"tags"`
	// Used maps every allocated address (secondary IPs, primary IPs and
	// each address of a delegated /28 prefix) to the ENI that owns it.
	Used map[string]string `json:"used"`
	// IPv6Used maps allocated IPv6 addresses to their ENI.
	IPv6Used map[string]string `json:"ipv6Used,omitempty"`
	// ExhaustedByFault is set by fault injection: the subnet reports no
	// free addresses whatever its real usage.
	ExhaustedByFault bool `json:"exhaustedByFault,omitempty"`
}

// SecurityGroup is a VPC security group. Rules are kept for describe only.
type SecurityGroup struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Description string `json:"description"`
	VPCID       string `json:"vpcId"`
	Tags        Tags   `json:"tags"`
}

// Instance is an EC2 instance.
type Instance struct {
	ID                 string    `json:"id"`
	ImageID            string    `json:"imageId"`
	Type               string    `json:"type"`
	SubnetID           string    `json:"subnetId"`
	VPCID              string    `json:"vpcId"`
	AZ                 string    `json:"az"`
	PrivateIP          string    `json:"privateIp"`
	KeyName            string    `json:"keyName,omitempty"`
	UserData           string    `json:"userData,omitempty"` // base64, as sent
	InstanceProfileARN string    `json:"instanceProfileArn,omitempty"`
	SecurityGroups     []string  `json:"securityGroups"`
	PrimaryENI         string    `json:"primaryEni"`
	State              string    `json:"state"`
	StateChangeAt      time.Time `json:"stateChangeAt"` // when a pending transition completes
	LaunchTime         time.Time `json:"launchTime"`
	LaunchIndex        int       `json:"launchIndex"`
	ReservationID      string    `json:"reservationId"`
	ClientToken        string    `json:"clientToken,omitempty"`
	Tags               Tags      `json:"tags"`
	MetadataHTTPTokens string    `json:"metadataHttpTokens"` // "required" | "optional"
}

// ENI is an elastic network interface.
type ENI struct {
	ID               string         `json:"id"`
	SubnetID         string         `json:"subnetId"`
	VPCID            string         `json:"vpcId"`
	AZ               string         `json:"az"`
	MAC              string         `json:"mac"`
	Description      string         `json:"description"`
	InterfaceType    string         `json:"interfaceType"`
	RequesterManaged bool           `json:"requesterManaged"`
	SourceDestCheck  bool           `json:"sourceDestCheck"`
	Groups           []string       `json:"groups"`
	PrivateIPs       []PrivateIP    `json:"privateIps"` // [0] is the primary
	IPv4Prefixes     []string       `json:"ipv4Prefixes"`
	IPv6Addresses    []string       `json:"ipv6Addresses"`
	Attachment       *ENIAttachment `json:"attachment,omitempty"`
	CreatedAt        time.Time      `json:"createdAt"`
	Tags             Tags           `json:"tags"`
}

// TrunkAssociation carries a branch ENI on a VLAN of a trunk ENI, as
// security groups for pods use them: the instance sends and receives the
// branch's traffic on the trunk's interface tagged with VlanID.
type TrunkAssociation struct {
	ID       string `json:"id"`
	BranchID string `json:"branchId"`
	TrunkID  string `json:"trunkId"`
	VlanID   int    `json:"vlanId"`
	Tags     Tags   `json:"tags"`
}

// PrivateIP is one IPv4 address of an ENI.
type PrivateIP struct {
	Address string `json:"address"`
	Primary bool   `json:"primary"`
}

// ENIAttachment is the attachment of an ENI to an instance. Transitions
// (attaching → attached, detaching → gone) complete at ReadyAt, applied by
// Service.settle before every request, as AWS does them asynchronously.
type ENIAttachment struct {
	ID                  string    `json:"id"`
	InstanceID          string    `json:"instanceId"`
	DeviceIndex         int       `json:"deviceIndex"`
	NetworkCardIndex    int       `json:"networkCardIndex"`
	Status              string    `json:"status"` // attaching | attached | detaching
	AttachTime          time.Time `json:"attachTime"`
	ReadyAt             time.Time `json:"readyAt"`
	DeleteOnTermination bool      `json:"deleteOnTermination"`
}

// Volume is an EBS volume.
type Volume struct {
	ID          string              `json:"id"`
	SizeGiB     int                 `json:"sizeGiB"`
	Type        string              `json:"type"`
	IOPS        int                 `json:"iops,omitempty"`
	Throughput  int                 `json:"throughput,omitempty"`
	Encrypted   bool                `json:"encrypted"`
	KMSKeyID    string              `json:"kmsKeyId,omitempty"`
	AZ          string              `json:"az"`
	SnapshotID  string              `json:"snapshotId,omitempty"`
	State       string              `json:"state"` // creating | available | in-use | deleting
	ReadyAt     time.Time           `json:"readyAt"`
	CreateTime  time.Time           `json:"createTime"`
	MultiAttach bool                `json:"multiAttach"`
	Attachments []*VolumeAttachment `json:"attachments"`
	// ClientToken and Fingerprint make CreateVolume idempotent.
	ClientToken string `json:"clientToken,omitempty"`
	Fingerprint string `json:"fingerprint,omitempty"`
	Tags        Tags   `json:"tags"`
	// Modification is the latest ModifyVolume, kept for DescribeVolumesModifications.
	Modification *VolumeModification `json:"modification,omitempty"`
}

// VolumeAttachment is one attachment of a volume.
type VolumeAttachment struct {
	InstanceID          string    `json:"instanceId"`
	Device              string    `json:"device"`
	State               string    `json:"state"` // attaching | attached | detaching
	AttachTime          time.Time `json:"attachTime"`
	ReadyAt             time.Time `json:"readyAt"`
	DeleteOnTermination bool      `json:"deleteOnTermination"`
}

// VolumeModification records a ModifyVolume request.
type VolumeModification struct {
	State              string    `json:"state"` // modifying | optimizing | completed
	OriginalSize       int       `json:"originalSize"`
	TargetSize         int       `json:"targetSize"`
	OriginalType       string    `json:"originalType"`
	TargetType         string    `json:"targetType"`
	OriginalIOPS       int       `json:"originalIops"`
	TargetIOPS         int       `json:"targetIops"`
	OriginalThroughput int       `json:"originalThroughput"`
	TargetThroughput   int       `json:"targetThroughput"`
	StartTime          time.Time `json:"startTime"`
	ReadyAt            time.Time `json:"readyAt"`
}

// Snapshot is an EBS snapshot.
type Snapshot struct {
	ID          string    `json:"id"`
	VolumeID    string    `json:"volumeId"`
	SizeGiB     int       `json:"sizeGiB"`
	Description string    `json:"description"`
	State       string    `json:"state"` // pending | completed
	StartTime   time.Time `json:"startTime"`
	ReadyAt     time.Time `json:"readyAt"`
	Encrypted   bool      `json:"encrypted"`
	Tags        Tags      `json:"tags"`
}
