package ec2

import (
	"context"
	"encoding/base64"
	"slices"
	"strconv"
	"strings"

	"github.com/berth-io/berth/internal/instancetypes"
	"github.com/berth-io/berth/localcloud/awserr"
)

func (s *Service) instanceHandlers() map[string]handler {
	return map[string]handler{
		"RunInstances":          s.runInstances,
		"DescribeInstances":     s.describeInstances,
		"TerminateInstances":    s.terminateInstances,
		"DescribeInstanceTypes": s.describeInstanceTypes,
	}
}

func instanceNotFound(id string) error {
	return awserr.BadRequest("InvalidInstanceID.NotFound", "The instance ID '%s' does not exist", id)
}

var stateCodes = map[string]int{"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48, "stopping": 64, "stopped": 80}

// live reports whether the instance still holds resources.
func (i *Instance) live() bool { return i.State == "pending" || i.State == "running" }

func (s *Service) runInstances(ctx context.Context, req *Request) (any, error) {
	p := req.Params
	token := p.Get("ClientToken")
	if token != "" {
		var prior []*Instance
		for _, inst := range s.st.Instances {
			if inst.ClientToken == token {
				prior = append(prior, inst)
			}
		}
		if len(prior) > 0 {
			slices.SortFunc(prior, func(a, b *Instance) int { return a.LaunchIndex - b.LaunchIndex })
			return s.renderReservation(prior), nil
		}
	}
	image, err := p.Required("ImageId")
	if err != nil {
		return nil, err
	}
	minCount, err := p.Int("MinCount", 0)
	if err != nil {
		return nil, err
	}
	maxCount, err := p.Int("MaxCount", 0)
	if err != nil {
		return nil, err
	}
	if !p.Has("MinCount") {
		return nil, awserr.MissingParameter("MinCount")
	}
	if !p.Has("MaxCount") {
		return nil, awserr.MissingParameter("MaxCount")
	}
	if minCount < 1 || maxCount < minCount {
		return nil, awserr.InvalidParameterValue("Invalid MinCount/MaxCount: %d/%d", minCount, maxCount)
	}
	typ := p.Get("InstanceType")
	if typ == "" {
		typ = "m5.large"
	}
	info, ok := instancetypes.Lookup(typ)
	if !ok {
		return nil, awserr.InvalidParameterValue("Invalid value '%s' for InstanceType.", typ)
	}
	nic := p.Struct("NetworkInterface.1")
	subID := p.Get("SubnetId")
	if subID == "" {
		subID = nic.Get("SubnetId")
	}
	var sub *Subnet
	if subID == "" {
		az := p.Get("Placement.AvailabilityZone")
		for _, cand := range s.st.Subnets {
			v := s.st.VPCs[cand.VPCID]
			if v != nil && v.IsDefault && (az == "" || cand.AZ == az) && (sub == nil || cand.ID < sub.ID) {
				sub = cand
			}
		}
		if sub == nil {
			return nil, awserr.BadRequest("VPCIdNotSpecified", "No default VPC for this user. GroupName is only supported for EC2-Classic and default VPC.")
		}
	} else if sub = s.st.Subnets[subID]; sub == nil {
		return nil, subnetNotFound(subID)
	}
	groups := p.List("SecurityGroupId")
	if len(groups) == 0 {
		groups = nic.List("SecurityGroupId")
	}
	if groups, err = s.groupsFor(groups, sub.VPCID); err != nil {
		return nil, err
	}
	userData := p.Get("UserData")
	if userData != "" {
		if _, err := base64.StdEncoding.DecodeString(userData); err != nil {
			return nil, awserr.InvalidParameterValue("Invalid BASE64 encoding of user data.")
		}
		if len(userData) > 16384*4/3+4 {
			return nil, awserr.InvalidParameterValue("User data is limited to 16384 bytes")
		}
	}
	profile := p.Get("IamInstanceProfile.Arn")
	if name := p.Get("IamInstanceProfile.Name"); profile == "" && name != "" {
		profile = "arn:aws:iam::" + s.cfg.Account + ":instance-profile/" + name
	}
	if profile != "" && !strings.HasPrefix(profile, "arn:aws:iam::") {
		return nil, awserr.InvalidParameterValue("Value (%s) for parameter iamInstanceProfile.arn is invalid. Invalid IAM Instance Profile ARN", profile)
	}
	primaryIP := p.Get("PrivateIpAddress")
	if primaryIP == "" {
		primaryIP = nic.Get("PrivateIpAddress")
	}
	if primaryIP != "" && maxCount > 1 {
		return nil, awserr.InvalidParameterCombination("Cannot specify a private IP address when launching more than one instance")
	}
	secondary, err := nic.Int("SecondaryPrivateIpAddressCount", 0)
	if err != nil {
		return nil, err
	}
	if secondary+1 > info.IPv4PerENI {
		return nil, awserr.BadRequest("PrivateIpAddressLimitExceeded", "Number of private addresses will exceed limit for instance type %s: at most %d per network interface.", typ, info.IPv4PerENI)
	}
	instTags, err := tagsFor(p, "instance")
	if err != nil {
		return nil, err
	}
	eniTags, err := tagsFor(p, "network-interface")
	if err != nil {
		return nil, err
	}
	httpTokens := p.Get("MetadataOptions.HttpTokens")
	switch httpTokens {
	case "":
		httpTokens = "required"
	case "required", "optional":
	default:
		return nil, awserr.InvalidParameterValue("Value (%s) for parameter MetadataOptions.HttpTokens is invalid.", httpTokens)
	}
	if availableIPs(sub) < minCount*(1+secondary) {
		return nil, awserr.BadRequest("InsufficientFreeAddressesInSubnet", "The specified subnet does not have enough free addresses to satisfy the request.")
	}
	count := maxCount
	if avail := availableIPs(sub) / (1 + secondary); avail < count {
		count = avail
	}
	resID := newID("r")
	var launched []*Instance
	for i := 0; i < count; i++ {
		e, err := s.newENI(eniSpec{Subnet: sub, Groups: groups, PrimaryIP: primaryIP, SecondaryCount: secondary, Tags: cloneTags(eniTags), Description: ""}, req.now)
		if err != nil {
			// Earlier instances of this call keep running, as on AWS only
			// when MinCount is met; otherwise roll them back.
			if len(launched) < minCount {
				for _, inst := range launched {
					s.releaseENI(s.st.ENIs[inst.PrimaryENI])
					delete(s.st.Instances, inst.ID)
				}
				return nil, err
			}
			break
		}
		inst := &Instance{ID: newID("i"), ImageID: image, Type: typ, SubnetID: sub.ID, VPCID: sub.VPCID, AZ: sub.AZ,
			PrivateIP: e.PrivateIPs[0].Address, KeyName: p.Get("KeyName"), UserData: userData, InstanceProfileARN: profile,
			SecurityGroups: groups, PrimaryENI: e.ID, State: "pending", StateChangeAt: req.now.Add(s.cfg.InstanceStartDelay),
			LaunchTime: req.now, LaunchIndex: i, ReservationID: resID, ClientToken: token, Tags: cloneTags(instTags),
			MetadataHTTPTokens: httpTokens}
		e.Attachment = &ENIAttachment{ID: newID("eni-attach"), InstanceID: inst.ID, DeviceIndex: 0, Status: "attached",
			AttachTime: req.now, ReadyAt: req.now, DeleteOnTermination: true}
		s.st.Instances[inst.ID] = inst
		launched = append(launched, inst)
	}
	s.markDirty()
	return s.renderReservation(launched), nil
}

func cloneTags(t Tags) Tags {
	out := make(Tags, len(t))
	for k, v := range t {
		out[k] = v
	}
	return out
}

type xmlInstanceState struct {
	Code int    `xml:"code"`
	Name string `xml:"name"`
}

type xmlInstance struct {
	InstanceID       string           `xml:"instanceId"`
	ImageID          string           `xml:"imageId"`
	State            xmlInstanceState `xml:"instanceState"`
	PrivateDNSName   string           `xml:"privateDnsName"`
	DNSName          string           `xml:"dnsName"`
	KeyName          string           `xml:"keyName,omitempty"`
	AmiLaunchIndex   int              `xml:"amiLaunchIndex"`
	InstanceType     string           `xml:"instanceType"`
	LaunchTime       string           `xml:"launchTime"`
	AvailabilityZone string           `xml:"placement>availabilityZone"`
	Tenancy          string           `xml:"placement>tenancy"`
	Monitoring       string           `xml:"monitoring>state"`
	SubnetID         string           `xml:"subnetId"`
	VpcID            string           `xml:"vpcId"`
	PrivateIPAddress string           `xml:"privateIpAddress"`
	SourceDestCheck  bool             `xml:"sourceDestCheck"`
	Groups           []xmlGroup       `xml:"groupSet>item"`
	Architecture     string           `xml:"architecture"`
	RootDeviceType   string           `xml:"rootDeviceType"`
	RootDeviceName   string           `xml:"rootDeviceName"`
	Virtualization   string           `xml:"virtualizationType"`
	ClientToken      string           `xml:"clientToken,omitempty"`
	Tags             []xmlTag         `xml:"tagSet>item,omitempty"`
	Hypervisor       string           `xml:"hypervisor"`
	ENIs             []xmlENI         `xml:"networkInterfaceSet>item"`
	IAMProfile       *struct {
		Arn string `xml:"arn"`
		ID  string `xml:"id"`
	} `xml:"iamInstanceProfile,omitempty"`
	EbsOptimized bool   `xml:"ebsOptimized"`
	EnaSupport   bool   `xml:"enaSupport"`
	HTTPTokens   string `xml:"metadataOptions>httpTokens"`
	HTTPEndpoint string `xml:"metadataOptions>httpEndpoint"`
	HopLimit     int    `xml:"metadataOptions>httpPutResponseHopLimit"`
	MetaState    string `xml:"metadataOptions>state"`
	BlockDevices []struct {
		DeviceName string `xml:"deviceName"`
		VolumeID   string `xml:"ebs>volumeId"`
		Status     string `xml:"ebs>status"`
		AttachTime string `xml:"ebs>attachTime"`
		DeleteOnT  bool   `xml:"ebs>deleteOnTermination"`
	} `xml:"blockDeviceMapping>item"`
}

func (s *Service) renderInstance(inst *Instance) xmlInstance {
	info, _ := instancetypes.Lookup(inst.Type)
	x := xmlInstance{InstanceID: inst.ID, ImageID: inst.ImageID, State: xmlInstanceState{stateCodes[inst.State], inst.State},
		KeyName: inst.KeyName, AmiLaunchIndex: inst.LaunchIndex, InstanceType: inst.Type, LaunchTime: ts(inst.LaunchTime),
		AvailabilityZone: inst.AZ, Tenancy: "default", Monitoring: "disabled", Architecture: info.Architecture,
		RootDeviceType: "ebs", RootDeviceName: "/dev/xvda", Virtualization: "hvm", ClientToken: inst.ClientToken,
		Tags: renderTags(inst.Tags), Hypervisor: "xen", EbsOptimized: true, EnaSupport: true,
		HTTPTokens: inst.MetadataHTTPTokens, HTTPEndpoint: "enabled", HopLimit: 2, MetaState: "applied"}
	if inst.live() {
		x.PrivateDNSName = s.privateDNS(inst.PrivateIP)
		x.SubnetID, x.VpcID, x.PrivateIPAddress = inst.SubnetID, inst.VPCID, inst.PrivateIP
		x.SourceDestCheck = true
		x.Groups = s.renderGroups(inst.SecurityGroups)
		var enis []*ENI
		for _, e := range s.st.ENIs {
			if e.Attachment != nil && e.Attachment.InstanceID == inst.ID {
				enis = append(enis, e)
			}
		}
		slices.SortFunc(enis, func(a, b *ENI) int { return a.Attachment.DeviceIndex - b.Attachment.DeviceIndex })
		for _, e := range enis {
			x.ENIs = append(x.ENIs, s.renderENI(e))
			if e.ID == inst.PrimaryENI {
				x.SourceDestCheck = e.SourceDestCheck
			}
		}
		for _, v := range s.st.Volumes {
			for _, a := range v.Attachments {
				if a.InstanceID == inst.ID {
					x.BlockDevices = append(x.BlockDevices, struct {
						DeviceName string `xml:"deviceName"`
						VolumeID   string `xml:"ebs>volumeId"`
						Status     string `xml:"ebs>status"`
						AttachTime string `xml:"ebs>attachTime"`
						DeleteOnT  bool   `xml:"ebs>deleteOnTermination"`
					}{a.Device, v.ID, a.State, ts(a.AttachTime), a.DeleteOnTermination})
				}
			}
		}
		slices.SortFunc(x.BlockDevices, func(a, b struct {
			DeviceName string `xml:"deviceName"`
			VolumeID   string `xml:"ebs>volumeId"`
			Status     string `xml:"ebs>status"`
			AttachTime string `xml:"ebs>attachTime"`
			DeleteOnT  bool   `xml:"ebs>deleteOnTermination"`
		}) int {
			return strings.Compare(a.DeviceName, b.DeviceName)
		})
	}
	if inst.InstanceProfileARN != "" {
		x.IAMProfile = &struct {
			Arn string `xml:"arn"`
			ID  string `xml:"id"`
		}{inst.InstanceProfileARN, "AIPA" + strings.ToUpper(inst.ID[2:])}
	}
	return x
}

type xmlReservation struct {
	ReservationID string        `xml:"reservationId"`
	OwnerID       string        `xml:"ownerId"`
	Groups        []xmlGroup    `xml:"groupSet>item"`
	Instances     []xmlInstance `xml:"instancesSet>item"`
}

// renderReservation is RunInstances' response body.
func (s *Service) renderReservation(insts []*Instance) any {
	r := xmlReservation{OwnerID: s.cfg.Account}
	for _, inst := range insts {
		r.ReservationID = inst.ReservationID
		r.Instances = append(r.Instances, s.renderInstance(inst))
	}
	return r
}

func instanceFilter(s *Service, inst *Instance) getter {
	return func(name string) ([]string, bool) {
		switch name {
		case "instance-id":
			return one(inst.ID), true
		case "instance-type":
			return one(inst.Type), true
		case "image-id":
			return one(inst.ImageID), true
		case "instance-state-name":
			return one(inst.State), true
		case "instance-state-code":
			return one(strconv.Itoa(stateCodes[inst.State])), true
		case "subnet-id":
			return one(inst.SubnetID), true
		case "vpc-id":
			return one(inst.VPCID), true
		case "availability-zone":
			return one(inst.AZ), true
		case "private-ip-address":
			return one(inst.PrivateIP), true
		case "private-dns-name":
			return one(s.privateDNS(inst.PrivateIP)), true
		case "reservation-id":
			return one(inst.ReservationID), true
		case "key-name":
			return one(inst.KeyName), true
		case "iam-instance-profile.arn":
			return one(inst.InstanceProfileARN), true
		case "network-interface.network-interface-id":
			var out []string
			for _, e := range s.st.ENIs {
				if e.Attachment != nil && e.Attachment.InstanceID == inst.ID {
					out = append(out, e.ID)
				}
			}
			return out, true
		case "instance.group-id", "group-id":
			return inst.SecurityGroups, true
		case "client-token":
			return one(inst.ClientToken), true
		}
		return nil, false
	}
}

func (s *Service) describeInstances(ctx context.Context, req *Request) (any, error) {
	filters, err := req.Params.Filters()
	if err != nil {
		return nil, err
	}
	if err := validateFilters(filters, instanceFilter(s, &Instance{})); err != nil {
		return nil, err
	}
	want, byID := ids(req.Params, "InstanceId")
	for id := range want {
		if !strings.HasPrefix(id, "i-") {
			return nil, awserr.BadRequest("InvalidInstanceID.Malformed", "Invalid id: \"%s\"", id)
		}
		if s.st.Instances[id] == nil {
			return nil, instanceNotFound(id)
		}
	}
	var list []*Instance
	for _, inst := range s.st.Instances {
		if (!byID || want[inst.ID]) && matches(filters, inst.Tags, instanceFilter(s, inst)) {
			list = append(list, inst)
		}
	}
	page, next, err := paginate(list, req.Params, func(i *Instance) string { return i.ReservationID + "/" + i.ID }, 5, 1000)
	if err != nil {
		return nil, err
	}
	out := struct {
		Reservations []xmlReservation `xml:"reservationSet>item"`
		NextToken    string           `xml:"nextToken,omitempty"`
	}{NextToken: next}
	for _, inst := range page {
		n := len(out.Reservations)
		if n == 0 || out.Reservations[n-1].ReservationID != inst.ReservationID {
			out.Reservations = append(out.Reservations, xmlReservation{ReservationID: inst.ReservationID, OwnerID: s.cfg.Account})
			n++
		}
		out.Reservations[n-1].Instances = append(out.Reservations[n-1].Instances, s.renderInstance(inst))
	}
	return out, nil
}

func (s *Service) terminateInstances(ctx context.Context, req *Request) (any, error) {
	list := req.Params.List("InstanceId")
	if len(list) == 0 {
		return nil, awserr.MissingParameter("InstanceId")
	}
	for _, id := range list {
		if s.st.Instances[id] == nil {
			return nil, instanceNotFound(id)
		}
	}
	type change struct {
		InstanceID string           `xml:"instanceId"`
		Current    xmlInstanceState `xml:"currentState"`
		Previous   xmlInstanceState `xml:"previousState"`
	}
	out := struct {
		Changes []change `xml:"instancesSet>item"`
	}{}
	for _, id := range list {
		inst := s.st.Instances[id]
		prev := xmlInstanceState{stateCodes[inst.State], inst.State}
		if inst.live() {
			if err := s.hooks.InstanceTerminated(ctx, inst); err != nil {
				s.log.Error("datapath: terminate instance", "instance", id, "err", err)
			}
			s.releaseInstanceResources(inst)
			inst.State = "shutting-down"
			inst.StateChangeAt = req.now.Add(s.cfg.InstanceStartDelay)
		}
		out.Changes = append(out.Changes, change{id, xmlInstanceState{stateCodes[inst.State], inst.State}, prev})
	}
	s.markDirty()
	return out, nil
}

// releaseInstanceResources deletes or detaches the instance's ENIs and
// volumes per their DeleteOnTermination flags.
func (s *Service) releaseInstanceResources(inst *Instance) {
	for _, e := range s.st.ENIs {
		if e.Attachment == nil || e.Attachment.InstanceID != inst.ID {
			continue
		}
		if e.Attachment.DeleteOnTermination {
			s.releaseENI(e)
		} else {
			e.Attachment = nil
		}
	}
	for id, v := range s.st.Volumes {
		kept := v.Attachments[:0]
		del := false
		for _, a := range v.Attachments {
			if a.InstanceID != inst.ID {
				kept = append(kept, a)
				continue
			}
			if a.DeleteOnTermination {
				del = true
			}
			if err := s.hooks.VolumeDetached(context.Background(), v, inst.ID); err != nil {
				s.log.Error("datapath: detach volume of terminated instance", "volume", v.ID, "err", err)
			}
		}
		v.Attachments = kept
		if len(kept) == 0 && v.State == "in-use" {
			v.State = "available"
		}
		if del && len(kept) == 0 {
			if err := s.hooks.VolumeDeleted(context.Background(), v); err != nil {
				s.log.Error("datapath: delete volume of terminated instance", "volume", v.ID, "err", err)
			}
			delete(s.st.Volumes, id)
		}
	}
}

func (s *Service) describeInstanceTypes(ctx context.Context, req *Request) (any, error) {
	filters, err := req.Params.Filters()
	if err != nil {
		return nil, err
	}
	get := func(info instancetypes.Info) getter {
		return func(name string) ([]string, bool) {
			switch name {
			case "instance-type":
				return one(info.Name), true
			case "hypervisor":
				return one(info.Hypervisor), true
			case "bare-metal":
				return one(strconv.FormatBool(info.BareMetal)), true
			case "processor-info.supported-architecture":
				return one(info.Architecture), true
			case "vcpu-info.default-vcpus":
				return one(strconv.Itoa(info.VCPUs)), true
			case "network-info.maximum-network-interfaces":
				return one(strconv.Itoa(info.MaxENIs)), true
			case "network-info.ipv4-addresses-per-interface":
				return one(strconv.Itoa(info.IPv4PerENI)), true
			case "network-info.ipv6-supported":
				return one(strconv.FormatBool(info.IPv6Supported)), true
			}
			return nil, false
		}
	}
	if err := validateFilters(filters, get(instancetypes.Info{})); err != nil {
		return nil, err
	}
	want, byName := ids(req.Params, "InstanceType")
	for name := range want {
		if _, ok := instancetypes.Lookup(name); !ok {
			return nil, awserr.InvalidParameterValue("The following supplied instance types do not exist: [%s]", name)
		}
	}
	var list []instancetypes.Info
	for _, info := range instancetypes.All() {
		if (!byName || want[info.Name]) && matches(filters, nil, get(info)) {
			list = append(list, info)
		}
	}
	page, next, err := paginate(list, req.Params, func(i instancetypes.Info) string { return i.Name }, 5, 100)
	if err != nil {
		return nil, err
	}
	type xmlType struct {
		InstanceType     string   `xml:"instanceType"`
		CurrentGen       bool     `xml:"currentGeneration"`
		BareMetal        bool     `xml:"bareMetal"`
		Hypervisor       string   `xml:"hypervisor,omitempty"`
		Architectures    []string `xml:"processorInfo>supportedArchitectures>item"`
		DefaultVCpus     int      `xml:"vCpuInfo>defaultVCpus"`
		MemorySizeInMiB  int64    `xml:"memoryInfo>sizeInMiB"`
		NetworkPerf      string   `xml:"networkInfo>networkPerformance"`
		MaxENIs          int      `xml:"networkInfo>maximumNetworkInterfaces"`
		MaxCards         int      `xml:"networkInfo>maximumNetworkCards"`
		DefaultCardIndex int      `xml:"networkInfo>defaultNetworkCardIndex"`
		IPv4PerENI       int      `xml:"networkInfo>ipv4AddressesPerInterface"`
		IPv6PerENI       int      `xml:"networkInfo>ipv6AddressesPerInterface"`
		IPv6Supported    bool     `xml:"networkInfo>ipv6Supported"`
		EnaSupport       string   `xml:"networkInfo>enaSupport"`
		Cards            []struct {
			Index   int    `xml:"networkCardIndex"`
			Perf    string `xml:"networkPerformance"`
			MaxENIs int    `xml:"maximumNetworkInterfaces"`
		} `xml:"networkInfo>networkCards>item"`
		EbsOptimized string `xml:"ebsInfo>ebsOptimizedSupport"`
		Nvme         string `xml:"ebsInfo>nvmeSupport"`
		MaxAttach    int    `xml:"ebsInfo>maximumEbsAttachments,omitempty"`
	}
	out := struct {
		Types     []xmlType `xml:"instanceTypeSet>item"`
		NextToken string    `xml:"nextToken,omitempty"`
	}{NextToken: next}
	for _, info := range page {
		t := xmlType{InstanceType: info.Name, CurrentGen: true, BareMetal: info.BareMetal, Hypervisor: info.Hypervisor,
			Architectures: []string{info.Architecture}, DefaultVCpus: info.VCPUs, MemorySizeInMiB: info.MemoryMiB,
			NetworkPerf: info.NetworkPerformance, MaxENIs: info.MaxENIs, MaxCards: max(info.NetworkCards, 1),
			IPv4PerENI: info.IPv4PerENI, IPv6PerENI: info.IPv6PerENI, IPv6Supported: info.IPv6Supported,
			EnaSupport: "supported", EbsOptimized: "default", Nvme: "required", MaxAttach: info.MaxEBSAttachments}
		if info.Hypervisor == "xen" {
			t.Nvme = "unsupported"
		}
		for c := 0; c < max(info.NetworkCards, 1); c++ {
			n := info.MaxENIs / max(info.NetworkCards, 1)
			t.Cards = append(t.Cards, struct {
				Index   int    `xml:"networkCardIndex"`
				Perf    string `xml:"networkPerformance"`
				MaxENIs int    `xml:"maximumNetworkInterfaces"`
			}{c, info.NetworkPerformance, n})
		}
		out.Types = append(out.Types, t)
	}
	return out, nil
}
