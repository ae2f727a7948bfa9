package ec2

import (
	"sort"
	"strconv"
	"strings"
	"time"
)

// XML shapes of EC2 responses (API version 2016-11-15). Element names are
// EC2's lowerCamel names; lists are <xxxSet><item>...</item></xxxSet>.

type xmlTag struct {
	Key   string `xml:"key"`
	Value string `xml:"value"`
}

func renderTags(t Tags) []xmlTag {
	out := make([]xmlTag, 0, len(t))
	for k, v := range t {
		out = append(out, xmlTag{k, v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// ts formats times as EC2 does (ISO 8601, milliseconds, UTC).
func ts(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

type xmlGroup struct {
	GroupID   string `xml:"groupId"`
	GroupName string `xml:"groupName"`
}

func (s *Service) renderGroups(ids []string) []xmlGroup {
	out := make([]xmlGroup, 0, len(ids))
	for _, id := range ids {
		name := ""
		if sg := s.st.SecurityGroups[id]; sg != nil {
			name = sg.Name
		}
		out = append(out, xmlGroup{id, name})
	}
	return out
}

type xmlVPC struct {
	VpcID           string         `xml:"vpcId"`
	OwnerID         string         `xml:"ownerId"`
	State           string         `xml:"state"`
	CidrBlock       string         `xml:"cidrBlock"`
	CidrAssociation []xmlCIDRAssoc `xml:"cidrBlockAssociationSet>item"`
	IPv6Association []xmlIPv6Assoc `xml:"ipv6CidrBlockAssociationSet>item,omitempty"`
	DhcpOptionsID   string         `xml:"dhcpOptionsId"`
	InstanceTenancy string         `xml:"instanceTenancy"`
	IsDefault       bool           `xml:"isDefault"`
	Tags            []xmlTag       `xml:"tagSet>item,omitempty"`
}

type xmlCIDRAssoc struct {
	AssociationID string `xml:"associationId"`
	CidrBlock     string `xml:"cidrBlock"`
	State         string `xml:"cidrBlockState>state"`
}

type xmlIPv6Assoc struct {
	AssociationID string `xml:"associationId"`
	Ipv6CidrBlock string `xml:"ipv6CidrBlock"`
	State         string `xml:"ipv6CidrBlockState>state"`
}

func (s *Service) renderVPC(v *VPC) xmlVPC {
	x := xmlVPC{VpcID: v.ID, OwnerID: s.cfg.Account, State: "available", CidrBlock: v.CIDR,
		DhcpOptionsID: "dopt-0000000000000000a", InstanceTenancy: "default", IsDefault: v.IsDefault, Tags: renderTags(v.Tags)}
	for _, a := range v.associations() {
		x.CidrAssociation = append(x.CidrAssociation, xmlCIDRAssoc{a.ID, a.CIDR, "associated"})
	}
	if v.IPv6CIDR != "" {
		x.IPv6Association = []xmlIPv6Assoc{{v.ipv6Association(), v.IPv6CIDR, "associated"}}
	}
	return x
}

type xmlSubnet struct {
	SubnetID                string         `xml:"subnetId"`
	SubnetArn               string         `xml:"subnetArn"`
	State                   string         `xml:"state"`
	VpcID                   string         `xml:"vpcId"`
	OwnerID                 string         `xml:"ownerId"`
	CidrBlock               string         `xml:"cidrBlock"`
	IPv6Association         []xmlIPv6Assoc `xml:"ipv6CidrBlockAssociationSet>item,omitempty"`
	AvailableIPAddressCount int            `xml:"availableIpAddressCount"`
	AvailabilityZone        string         `xml:"availabilityZone"`
	AvailabilityZoneID      string         `xml:"availabilityZoneId"`
	DefaultForAz            bool           `xml:"defaultForAz"`
	MapPublicIPOnLaunch     bool           `xml:"mapPublicIpOnLaunch"`
	AssignIpv6OnCreation    bool           `xml:"assignIpv6AddressOnCreation"`
	Tags                    []xmlTag       `xml:"tagSet>item,omitempty"`
}

func (s *Service) renderSubnet(sub *Subnet) xmlSubnet {
	x := xmlSubnet{SubnetID: sub.ID, SubnetArn: "arn:aws:ec2:" + s.cfg.Region + ":" + s.cfg.Account + ":subnet/" + sub.ID,
		State: "available", VpcID: sub.VPCID, OwnerID: s.cfg.Account, CidrBlock: sub.CIDR,
		AvailableIPAddressCount: availableIPs(sub), AvailabilityZone: sub.AZ, AvailabilityZoneID: s.azID(sub.AZ),
		Tags: renderTags(sub.Tags)}
	if sub.IPv6CIDR != "" {
		x.IPv6Association = []xmlIPv6Assoc{{"subnet-cidr-assoc-" + sub.ID[7:], sub.IPv6CIDR, "associated"}}
	}
	return x
}

// azID maps us-west-2a to usw2-az1: the zone's index in the region.
func (s *Service) azID(az string) string {
	for i, z := range s.cfg.AZs {
		if z == az {
			parts := strings.Split(s.cfg.Region, "-")
			short := s.cfg.Region
			if len(parts) == 3 && parts[1] != "" {
				short = parts[0] + parts[1][:1] + parts[2]
			}
			return short + "-az" + strconv.Itoa(i+1)
		}
	}
	return ""
}

type xmlSecurityGroup struct {
	OwnerID     string   `xml:"ownerId"`
	GroupID     string   `xml:"groupId"`
	GroupName   string   `xml:"groupName"`
	Description string   `xml:"groupDescription"`
	VpcID       string   `xml:"vpcId"`
	Tags        []xmlTag `xml:"tagSet>item,omitempty"`
}

type xmlPrivateIP struct {
	PrivateIPAddress string `xml:"privateIpAddress"`
	PrivateDNSName   string `xml:"privateDnsName"`
	Primary          bool   `xml:"primary"`
}

type xmlENIAttachment struct {
	AttachmentID        string `xml:"attachmentId"`
	InstanceID          string `xml:"instanceId"`
	InstanceOwnerID     string `xml:"instanceOwnerId"`
	DeviceIndex         int    `xml:"deviceIndex"`
	NetworkCardIndex    int    `xml:"networkCardIndex"`
	Status              string `xml:"status"`
	AttachTime          string `xml:"attachTime"`
	DeleteOnTermination bool   `xml:"deleteOnTermination"`
}

type xmlENI struct {
	NetworkInterfaceID string            `xml:"networkInterfaceId"`
	SubnetID           string            `xml:"subnetId"`
	VpcID              string            `xml:"vpcId"`
	AvailabilityZone   string            `xml:"availabilityZone"`
	Description        string            `xml:"description"`
	OwnerID            string            `xml:"ownerId"`
	RequesterManaged   bool              `xml:"requesterManaged"`
	Status             string            `xml:"status"`
	MacAddress         string            `xml:"macAddress"`
	PrivateIPAddress   string            `xml:"privateIpAddress"`
	PrivateDNSName     string            `xml:"privateDnsName"`
	SourceDestCheck    bool              `xml:"sourceDestCheck"`
	InterfaceType      string            `xml:"interfaceType"`
	Groups             []xmlGroup        `xml:"groupSet>item"`
	Attachment         *xmlENIAttachment `xml:"attachment,omitempty"`
	Tags               []xmlTag          `xml:"tagSet>item"`
	PrivateIPs         []xmlPrivateIP    `xml:"privateIpAddressesSet>item"`
	IPv4Prefixes       []struct {
		Prefix string `xml:"ipv4Prefix"`
	} `xml:"ipv4PrefixSet>item,omitempty"`
	IPv6Addresses []struct {
		Address string `xml:"ipv6Address"`
	} `xml:"ipv6AddressesSet>item,omitempty"`
}

func (s *Service) privateDNS(ip string) string {
	b := []byte("ip-" + ip)
	for i := range b {
		if b[i] == '.' {
			b[i] = '-'
		}
	}
	if s.cfg.Region == "us-east-1" {
		return string(b) + ".ec2.internal"
	}
	return string(b) + "." + s.cfg.Region + ".compute.internal"
}

func (s *Service) renderENI(e *ENI) xmlENI {
	x := xmlENI{NetworkInterfaceID: e.ID, SubnetID: e.SubnetID, VpcID: e.VPCID, AvailabilityZone: e.AZ,
		Description: e.Description, OwnerID: s.cfg.Account, RequesterManaged: e.RequesterManaged, Status: eniStatus(e),
		MacAddress: e.MAC, SourceDestCheck: e.SourceDestCheck, InterfaceType: e.InterfaceType,
		Groups: s.renderGroups(e.Groups), Tags: renderTags(e.Tags)}
	for _, ip := range e.PrivateIPs {
		if ip.Primary {
			x.PrivateIPAddress = ip.Address
			x.PrivateDNSName = s.privateDNS(ip.Address)
		}
		x.PrivateIPs = append(x.PrivateIPs, xmlPrivateIP{ip.Address, s.privateDNS(ip.Address), ip.Primary})
	}
	for _, p := range e.IPv4Prefixes {
		x.IPv4Prefixes = append(x.IPv4Prefixes, struct {
			Prefix string `xml:"ipv4Prefix"`
		}{p})
	}
	for _, a := range e.IPv6Addresses {
		x.IPv6Addresses = append(x.IPv6Addresses, struct {
			Address string `xml:"ipv6Address"`
		}{a})
	}
	if a := e.Attachment; a != nil {
		x.Attachment = &xmlENIAttachment{AttachmentID: a.ID, InstanceID: a.InstanceID, InstanceOwnerID: s.cfg.Account,
			DeviceIndex: a.DeviceIndex, NetworkCardIndex: a.NetworkCardIndex, Status: a.Status,
			AttachTime: ts(a.AttachTime), DeleteOnTermination: a.DeleteOnTermination}
	}
	return x
}

func eniStatus(e *ENI) string {
	if e.Attachment == nil {
		return "available"
	}
	if e.Attachment.Status == "attaching" {
		return "attaching"
	}
	if e.Attachment.Status == "detaching" {
		return "detaching"
	}
	return "in-use"
}

// AZID is the zone ID of a zone of the region (us-west-2a → usw2-az1).
func (s *Service) AZID(az string) string { return s.azID(az) }
