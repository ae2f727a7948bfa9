package ec2

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/berth-io/berth/internal/instancetypes"
	"github.com/berth-io/berth/localcloud/awserr"
)

// EBS: volumes, attachments, modifications and snapshots. Limits are the
// documented ones per volume type; state transitions are asynchronous and
// completed by settleEBS.

func (s *Service) ebsHandlers() map[string]handler {
	return map[string]handler{
		"CreateVolume":                 s.createVolume,
		"DeleteVolume":                 s.deleteVolume,
		"DescribeVolumes":              s.describeVolumes,
		"AttachVolume":                 s.attachVolume,
		"DetachVolume":                 s.detachVolume,
		"ModifyVolume":                 s.modifyVolume,
		"DescribeVolumesModifications": s.describeVolumesModifications,
		"CreateSnapshot":               s.createSnapshot,
		"DeleteSnapshot":               s.deleteSnapshot,
		"DescribeSnapshots":            s.describeSnapshots,
	}
}

// volumeLimits are EBS's documented bounds for one volume type.
type volumeLimits struct {
	minSize, maxSize int
	minIOPS, maxIOPS int
	defaultIOPS      int
	iopsPerGiB       int // 0: no ratio limit
	iopsSettable     bool
	throughput       bool // gp3 only
	multiAttach      bool
}

var volumeTypes = map[string]volumeLimits{
	"gp2":      {minSize: 1, maxSize: 16384},
	"gp3":      {minSize: 1, maxSize: 16384, minIOPS: 3000, maxIOPS: 16000, defaultIOPS: 3000, iopsPerGiB: 500, iopsSettable: true, throughput: true},
	"io1":      {minSize: 4, maxSize: 16384, minIOPS: 100, maxIOPS: 64000, iopsPerGiB: 50, iopsSettable: true, multiAttach: true},
	"io2":      {minSize: 4, maxSize: 65536, minIOPS: 100, maxIOPS: 256000, iopsPerGiB: 1000, iopsSettable: true, multiAttach: true},
	"st1":      {minSize: 125, maxSize: 16384},
	"sc1":      {minSize: 125, maxSize: 16384},
	"standard": {minSize: 1, maxSize: 1024},
}

// gp2IOPS is gp2's baseline: 3 IOPS per GiB, at least 100, at most 16,000.
func gp2IOPS(size int) int { return min(max(3*size, 100), 16000) }

// volumeSpec is a validated volume configuration.
type volumeSpec struct {
	typ              string
	size, iops, tput int
}

// validateVolume checks type, size, iops and throughput together.
func validateVolume(v volumeSpec, iopsGiven, tputGiven bool) (volumeSpec, error) {
	lim, ok := volumeTypes[v.typ]
	if !ok {
		return v, awserr.InvalidParameterValue("Value (%s) for parameter volumeType is invalid. Valid values: gp2, gp3, io1, io2, st1, sc1, standard.", v.typ)
	}
	if v.size < lim.minSize || v.size > lim.maxSize {
		return v, awserr.InvalidParameterValue("Volume of %dGiB is outside the range of %d-%dGiB for %s volumes.", v.size, lim.minSize, lim.maxSize, v.typ)
	}
	switch {
	case iopsGiven && !lim.iopsSettable:
		return v, awserr.InvalidParameterCombination("The parameter iops is not supported for %s volumes.", v.typ)
	case !iopsGiven && lim.iopsSettable && lim.defaultIOPS == 0:
		return v, awserr.MissingParameter("iops")
	case !iopsGiven && lim.defaultIOPS > 0:
		v.iops = lim.defaultIOPS
	case !lim.iopsSettable:
		v.iops = 0
		if v.typ == "gp2" {
			v.iops = gp2IOPS(v.size)
		}
	}
	if lim.iopsSettable {
		if v.iops < lim.minIOPS || v.iops > lim.maxIOPS {
			return v, awserr.InvalidParameterValue("Volume iops of %d is outside the range of %d-%d for %s volumes.", v.iops, lim.minIOPS, lim.maxIOPS, v.typ)
		}
		if lim.iopsPerGiB > 0 && v.iops > lim.iopsPerGiB*v.size && !(v.typ == "gp3" && v.iops == lim.defaultIOPS) {
			return v, awserr.InvalidParameterValue("Iops to volume size ratio of %.1f is too high; maximum is %d.", float64(v.iops)/float64(v.size), lim.iopsPerGiB)
		}
	}
	switch {
	case tputGiven && !lim.throughput:
		return v, awserr.InvalidParameterCombination("The parameter throughput is not supported for %s volumes.", v.typ)
	case lim.throughput && !tputGiven:
		v.tput = 125
	case !lim.throughput:
		v.tput = 0
	}
	if lim.throughput {
		if v.tput < 125 || v.tput > 1000 {
			return v, awserr.InvalidParameterValue("Throughput of %d MiB/s is outside the range of 125-1000 for gp3 volumes.", v.tput)
		}
		if float64(v.tput) > float64(v.iops)*0.25 {
			return v, awserr.InvalidParameterValue("Throughput (MiBps) to iops ratio of %.3f is too high; maximum is 0.25 MiBps per iops.", float64(v.tput)/float64(v.iops))
		}
	}
	return v, nil
}

func volumeNotFound(id string) error {
	return awserr.BadRequest("InvalidVolume.NotFound", "The volume '%s' does not exist.", id)
}

func (s *Service) lookupVolume(id string) (*Volume, error) {
	if !strings.HasPrefix(id, "vol-") || len(id) < 5 {
		return nil, awserr.BadRequest("InvalidVolumeID.Malformed", "Invalid id: \"%s\" (expecting \"vol-...\")", id)
	}
	v := s.st.Volumes[id]
	if v == nil {
		return nil, volumeNotFound(id)
	}
	return v, nil
}

func (s *Service) createVolume(ctx context.Context, req *Request) (any, error) {
	p := req.Params
	az, err := p.Required("AvailabilityZone")
	if err != nil {
		return nil, err
	}
	if !slices.Contains(s.cfg.AZs, az) {
		return nil, awserr.InvalidParameterValue("Invalid availability zone: [%s]", az)
	}
	spec := volumeSpec{typ: p.Get("VolumeType")}
	if spec.typ == "" {
		spec.typ = "gp3"
	}
	if spec.size, err = p.Int("Size", 0); err != nil {
		return nil, err
	}
	if spec.iops, err = p.Int("Iops", 0); err != nil {
		return nil, err
	}
	if spec.tput, err = p.Int("Throughput", 0); err != nil {
		return nil, err
	}
	snapID := p.Get("SnapshotId")
	var snap *Snapshot
	if snapID != "" {
		if snap = s.st.Snapshots[snapID]; snap == nil {
			return nil, awserr.BadRequest("InvalidSnapshot.NotFound", "The snapshot '%s' does not exist.", snapID)
		}
		if !p.Has("Size") {
			spec.size = snap.SizeGiB
		} else if spec.size < snap.SizeGiB {
			return nil, awserr.InvalidParameterValue("Volume of %dGiB is smaller than snapshot '%s', expect size >= %dGiB", spec.size, snapID, snap.SizeGiB)
		}
	} else if !p.Has("Size") {
		return nil, awserr.MissingParameter("size")
	}
	if spec, err = validateVolume(spec, p.Has("Iops"), p.Has("Throughput")); err != nil {
		return nil, err
	}
	encrypted, err := p.Bool("Encrypted", snap != nil && snap.Encrypted)
	if err != nil {
		return nil, err
	}
	kms := p.Get("KmsKeyId")
	if kms != "" && !encrypted {
		return nil, awserr.InvalidParameterDependency("The parameter KmsKeyId requires the parameter Encrypted to be set.")
	}
	if encrypted && kms == "" {
		kms = "arn:aws:kms:" + s.cfg.Region + ":" + s.cfg.Account + ":key/aws-ebs-default"
	}
	multi, err := p.Bool("MultiAttachEnabled", false)
	if err != nil {
		return nil, err
	}
	if multi && !volumeTypes[spec.typ].multiAttach {
		return nil, awserr.InvalidParameterCombination("Multi-Attach is supported only on io1 and io2 volumes.")
	}
	tags, err := tagsFor(p, "volume")
	if err != nil {
		return nil, err
	}
	token := p.Get("ClientToken")
	fp := fmt.Sprintf("%s|%d|%s|%d|%d|%t|%s|%s|%t", az, spec.size, spec.typ, spec.iops, spec.tput, encrypted, kms, snapID, multi)
	if id := s.idempotent(req.Action, token); id != "" {
		v := s.st.Volumes[id]
		if v == nil || v.Fingerprint != fp {
			return nil, awserr.BadRequest("IdempotentParameterMismatch", "The client token you have provided is associated with a resource that is already deleted or has different parameters. Please use a different client token.")
		}
		return s.renderVolume(v), nil
	}
	v := &Volume{ID: newID("vol"), SizeGiB: spec.size, Type: spec.typ, IOPS: spec.iops, Throughput: spec.tput, Encrypted: encrypted,
		KMSKeyID: kms, AZ: az, SnapshotID: snapID, State: "creating", ReadyAt: req.now.Add(s.cfg.VolumeCreateDelay),
		CreateTime: req.now, MultiAttach: multi, Tags: tags, ClientToken: token, Fingerprint: fp}
	s.st.Volumes[v.ID] = v
	s.rememberToken(req.Action, token, v.ID)
	s.markDirty()
	return s.renderVolume(v), nil
}

type xmlVolumeAttachment struct {
	VolumeID            string `xml:"volumeId"`
	InstanceID          string `xml:"instanceId"`
	Device              string `xml:"device"`
	Status              string `xml:"status"`
	AttachTime          string `xml:"attachTime"`
	DeleteOnTermination bool   `xml:"deleteOnTermination"`
}

type xmlVolume struct {
	VolumeID           string                `xml:"volumeId"`
	VolumeArn          string                `xml:"volumeArn,omitempty"`
	Size               int                   `xml:"size"`
	SnapshotID         string                `xml:"snapshotId"`
	AvailabilityZone   string                `xml:"availabilityZone"`
	AvailabilityZoneID string                `xml:"availabilityZoneId,omitempty"`
	Status             string                `xml:"status"`
	CreateTime         string                `xml:"createTime"`
	Attachments        []xmlVolumeAttachment `xml:"attachmentSet>item"`
	Tags               []xmlTag              `xml:"tagSet>item,omitempty"`
	VolumeType         string                `xml:"volumeType"`
	Iops               int                   `xml:"iops,omitempty"`
	Throughput         int                   `xml:"throughput,omitempty"`
	Encrypted          bool                  `xml:"encrypted"`
	KmsKeyID           string                `xml:"kmsKeyId,omitempty"`
	MultiAttachEnabled bool                  `xml:"multiAttachEnabled"`
	OwnerID            string                `xml:"ownerId,omitempty"`
}

func (s *Service) renderAttachment(v *Volume, a *VolumeAttachment) xmlVolumeAttachment {
	return xmlVolumeAttachment{v.ID, a.InstanceID, a.Device, a.State, ts(a.AttachTime), a.DeleteOnTermination}
}

func (s *Service) renderVolume(v *Volume) xmlVolume {
	x := xmlVolume{VolumeID: v.ID, VolumeArn: "arn:aws:ec2:" + s.cfg.Region + ":" + s.cfg.Account + ":volume/" + v.ID,
		Size: v.SizeGiB, SnapshotID: v.SnapshotID, AvailabilityZone: v.AZ, AvailabilityZoneID: s.azID(v.AZ), Status: v.State,
		CreateTime: ts(v.CreateTime), Tags: renderTags(v.Tags), VolumeType: v.Type, Iops: v.IOPS, Throughput: v.Throughput,
		Encrypted: v.Encrypted, KmsKeyID: v.KMSKeyID, MultiAttachEnabled: v.MultiAttach, OwnerID: s.cfg.Account}
	for _, a := range v.Attachments {
		x.Attachments = append(x.Attachments, s.renderAttachment(v, a))
	}
	return x
}

func (s *Service) deleteVolume(ctx context.Context, req *Request) (any, error) {
	id, err := req.Params.Required("VolumeId")
	if err != nil {
		return nil, err
	}
	v, err := s.lookupVolume(id)
	if err != nil {
		return nil, err
	}
	if v.State != "available" {
		return nil, awserr.BadRequest("VolumeInUse", "Volume %s is currently attached to %s", id, attachedTo(v))
	}
	if err := s.hooks.VolumeDeleted(ctx, v); err != nil {
		s.log.Error("datapath: delete volume", "volume", id, "err", err)
	}
	delete(s.st.Volumes, id)
	s.markDirty()
	return returnTrue(), nil
}

func attachedTo(v *Volume) string {
	var ids []string
	for _, a := range v.Attachments {
		ids = append(ids, a.InstanceID)
	}
	if len(ids) == 0 {
		return "nothing (state " + v.State + ")"
	}
	return strings.Join(ids, ", ")
}

func volumeFilter(v *Volume) getter {
	return func(name string) ([]string, bool) {
		att := func(f func(*VolumeAttachment) string) []string {
			var out []string
			for _, a := range v.Attachments {
				out = append(out, f(a))
			}
			return out
		}
		switch name {
		case "volume-id":
			return one(v.ID), true
		case "status":
			return one(v.State), true
		case "availability-zone":
			return one(v.AZ), true
		case "volume-type":
			return one(v.Type), true
		case "size":
			return one(strconv.Itoa(v.SizeGiB)), true
		case "snapshot-id":
			return one(v.SnapshotID), true
		case "encrypted":
			return one(strconv.FormatBool(v.Encrypted)), true
		case "multi-attach-enabled":
			return one(strconv.FormatBool(v.MultiAttach)), true
		case "attachment.instance-id":
			return att(func(a *VolumeAttachment) string { return a.InstanceID }), true
		case "attachment.device":
			return att(func(a *VolumeAttachment) string { return a.Device }), true
		case "attachment.status":
			return att(func(a *VolumeAttachment) string { return a.State }), true
		case "attachment.delete-on-termination":
			return att(func(a *VolumeAttachment) string { return strconv.FormatBool(a.DeleteOnTermination) }), true
		}
		return nil, false
	}
}

func (s *Service) describeVolumes(ctx context.Context, req *Request) (any, error) {
	filters, err := req.Params.Filters()
	if err != nil {
		return nil, err
	}
	if err := validateFilters(filters, volumeFilter(&Volume{})); err != nil {
		return nil, err
	}
	want, byID := ids(req.Params, "VolumeId")
	if byID && req.Params.Has("MaxResults") {
		return nil, awserr.InvalidParameterCombination("The parameter volumeSet cannot be used with the parameter maxResults")
	}
	for id := range want {
		if _, err := s.lookupVolume(id); err != nil {
			return nil, err
		}
	}
	var list []*Volume
	for _, v := range s.st.Volumes {
		if (!byID || want[v.ID]) && matches(filters, v.Tags, volumeFilter(v)) {
			list = append(list, v)
		}
	}
	page, next, err := paginate(list, req.Params, func(v *Volume) string { return v.ID }, 5, 500)
	if err != nil {
		return nil, err
	}
	out := struct {
		Volumes   []xmlVolume `xml:"volumeSet>item"`
		NextToken string      `xml:"nextToken,omitempty"`
	}{NextToken: next}
	for _, v := range page {
		out.Volumes = append(out.Volumes, s.renderVolume(v))
	}
	return out, nil
}

var deviceName = regexp.MustCompile(`^/dev/(sd[a-z]{1,2}|xvd[a-z]{1,2}|xvd[a-z][0-9]{1,2})$`)

// ebsSlots returns how many data volumes the instance may still take.
func (s *Service) ebsSlots(inst *Instance) int {
	info, _ := instancetypes.Lookup(inst.Type)
	used := 1 // the root volume
	if info.EBSSharedWithENIs {
		for _, e := range s.st.ENIs {
			if e.Attachment != nil && e.Attachment.InstanceID == inst.ID {
				used++
			}
		}
	}
	for _, v := range s.st.Volumes {
		for _, a := range v.Attachments {
			if a.InstanceID == inst.ID {
				used++
			}
		}
	}
	return info.MaxEBSAttachments - used
}

func (s *Service) attachVolume(ctx context.Context, req *Request) (any, error) {
	p := req.Params
	volID, err := p.Required("VolumeId")
	if err != nil {
		return nil, err
	}
	instID, err := p.Required("InstanceId")
	if err != nil {
		return nil, err
	}
	device, err := p.Required("Device")
	if err != nil {
		return nil, err
	}
	v, err := s.lookupVolume(volID)
	if err != nil {
		return nil, err
	}
	inst := s.st.Instances[instID]
	if inst == nil {
		return nil, instanceNotFound(instID)
	}
	if !inst.live() {
		return nil, awserr.BadRequest("IncorrectInstanceState", "Instance '%s' is not 'running'.", instID)
	}
	if !deviceName.MatchString(device) || device == "/dev/xvda" || device == "/dev/sda1" {
		return nil, awserr.InvalidParameterValue("Value (%s) for parameter device is invalid. %s is not a valid EBS device name.", device, device)
	}
	if v.AZ != inst.AZ {
		return nil, awserr.BadRequest("InvalidVolume.ZoneMismatch", "The volume '%s' is not in the same availability zone as instance '%s'", volID, instID)
	}
	if v.State == "creating" {
		return nil, awserr.BadRequest("IncorrectState", "Volume '%s' is in the 'creating' state.", volID)
	}
	for _, a := range v.Attachments {
		if a.InstanceID == instID {
			return nil, awserr.BadRequest("VolumeInUse", "%s is already attached to an instance", volID)
		}
	}
	if len(v.Attachments) > 0 && !v.MultiAttach {
		return nil, awserr.BadRequest("VolumeInUse", "%s is already attached to an instance", volID)
	}
	for _, other := range s.st.Volumes {
		for _, a := range other.Attachments {
			if a.InstanceID == instID && a.Device == device {
				return nil, awserr.InvalidParameterValue("Attachment point %s is already in use", device)
			}
		}
	}
	if s.ebsSlots(inst) <= 0 {
		return nil, awserr.BadRequest("AttachmentLimitExceeded", "Volume attachment limit exceeded for instance %s (%s).", instID, inst.Type)
	}
	a := &VolumeAttachment{InstanceID: instID, Device: device, State: "attaching", AttachTime: req.now, ReadyAt: req.now.Add(s.attachDelay())}
	v.Attachments = append(v.Attachments, a)
	v.State = "in-use"
	s.markDirty()
	return s.renderAttachment(v, a), nil
}

func (s *Service) detachVolume(ctx context.Context, req *Request) (any, error) {
	p := req.Params
	volID, err := p.Required("VolumeId")
	if err != nil {
		return nil, err
	}
	v, err := s.lookupVolume(volID)
	if err != nil {
		return nil, err
	}
	instID, device := p.Get("InstanceId"), p.Get("Device")
	var found *VolumeAttachment
	for _, a := range v.Attachments {
		if (instID == "" || a.InstanceID == instID) && (device == "" || a.Device == device) {
			found = a
			break
		}
	}
	if found == nil {
		if instID != "" && s.st.Instances[instID] == nil {
			return nil, instanceNotFound(instID)
		}
		return nil, awserr.BadRequest("IncorrectState", "Volume '%s' is in the '%s' state.", volID, v.State)
	}
	if len(v.Attachments) > 1 && instID == "" {
		return nil, awserr.MissingParameter("InstanceId (the volume is attached to several instances)")
	}
	if found.State != "detaching" {
		found.State = "detaching"
		found.ReadyAt = req.now.Add(s.attachDelay())
		s.markDirty()
	}
	return s.renderAttachment(v, found), nil
}

type xmlModification struct {
	VolumeID           string `xml:"volumeId"`
	ModificationState  string `xml:"modificationState"`
	TargetSize         int    `xml:"targetSize"`
	TargetIops         int    `xml:"targetIops"`
	TargetVolumeType   string `xml:"targetVolumeType"`
	TargetThroughput   int    `xml:"targetThroughput"`
	OriginalSize       int    `xml:"originalSize"`
	OriginalIops       int    `xml:"originalIops"`
	OriginalVolumeType string `xml:"originalVolumeType"`
	OriginalThroughput int    `xml:"originalThroughput"`
	Progress           int    `xml:"progress"`
	StartTime          string `xml:"startTime"`
}

func renderModification(id string, m *VolumeModification) xmlModification {
	progress := 0
	switch m.State {
	case "optimizing":
		progress = 50
	case "completed":
		progress = 100
	}
	return xmlModification{id, m.State, m.TargetSize, m.TargetIOPS, m.TargetType, m.TargetThroughput,
		m.OriginalSize, m.OriginalIOPS, m.OriginalType, m.OriginalThroughput, progress, ts(m.StartTime)}
}

func (s *Service) modifyVolume(ctx context.Context, req *Request) (any, error) {
	p := req.Params
	volID, err := p.Required("VolumeId")
	if err != nil {
		return nil, err
	}
	v, err := s.lookupVolume(volID)
	if err != nil {
		return nil, err
	}
	if m := v.Modification; m != nil && m.State != "completed" {
		return nil, awserr.BadRequest("IncorrectModificationState", "Cannot modify volume %s: a modification is in progress (state %s).", volID, m.State)
	}
	spec := volumeSpec{typ: v.Type, size: v.SizeGiB, iops: v.IOPS, tput: v.Throughput}
	if t := p.Get("VolumeType"); t != "" {
		spec.typ = t
	}
	if spec.size, err = p.Int("Size", v.SizeGiB); err != nil {
		return nil, err
	}
	if spec.iops, err = p.Int("Iops", v.IOPS); err != nil {
		return nil, err
	}
	if spec.tput, err = p.Int("Throughput", v.Throughput); err != nil {
		return nil, err
	}
	if !p.Has("VolumeType") && !p.Has("Size") && !p.Has("Iops") && !p.Has("Throughput") && !p.Has("MultiAttachEnabled") {
		return nil, awserr.MissingParameter("at least one of Size, VolumeType, Iops or Throughput")
	}
	if spec.size < v.SizeGiB {
		return nil, awserr.InvalidParameterValue("New size cannot be smaller than existing size (%d < %d).", spec.size, v.SizeGiB)
	}
	// Keep a type's settable values only when the type stays settable.
	keepIOPS := p.Has("Iops") || (volumeTypes[spec.typ].iopsSettable && spec.typ == v.Type)
	keepTput := p.Has("Throughput") || (volumeTypes[spec.typ].throughput && spec.typ == v.Type)
	if spec, err = validateVolume(spec, keepIOPS, keepTput); err != nil {
		return nil, err
	}
	m := &VolumeModification{State: "modifying", OriginalSize: v.SizeGiB, TargetSize: spec.size, OriginalType: v.Type, TargetType: spec.typ,
		OriginalIOPS: v.IOPS, TargetIOPS: spec.iops, OriginalThroughput: v.Throughput, TargetThroughput: spec.tput,
		StartTime: req.now, ReadyAt: req.now.Add(s.cfg.VolumeCreateDelay)}
	v.SizeGiB, v.Type, v.IOPS, v.Throughput = spec.size, spec.typ, spec.iops, spec.tput
	v.Modification = m
	s.markDirty()
	return struct {
		Mod xmlModification `xml:"volumeModification"`
	}{renderModification(v.ID, m)}, nil
}

func (s *Service) describeVolumesModifications(ctx context.Context, req *Request) (any, error) {
	want, byID := ids(req.Params, "VolumeId")
	for id := range want {
		if _, err := s.lookupVolume(id); err != nil {
			return nil, err
		}
	}
	var list []*Volume
	for _, v := range s.st.Volumes {
		if v.Modification != nil && (!byID || want[v.ID]) {
			list = append(list, v)
		}
	}
	page, next, err := paginate(list, req.Params, func(v *Volume) string { return v.ID }, 5, 500)
	if err != nil {
		return nil, err
	}
	out := struct {
		Mods      []xmlModification `xml:"volumeModificationSet>item"`
		NextToken string            `xml:"nextToken,omitempty"`
	}{NextToken: next}
	for _, v := range page {
		out.Mods = append(out.Mods, renderModification(v.ID, v.Modification))
	}
	return out, nil
}

type xmlSnapshot struct {
	SnapshotID  string   `xml:"snapshotId"`
	VolumeID    string   `xml:"volumeId"`
	Status      string   `xml:"status"`
	StartTime   string   `xml:"startTime"`
	Progress    string   `xml:"progress"`
	OwnerID     string   `xml:"ownerId"`
	VolumeSize  int      `xml:"volumeSize"`
	Description string   `xml:"description"`
	Encrypted   bool     `xml:"encrypted"`
	Tags        []xmlTag `xml:"tagSet>item,omitempty"`
}

func (s *Service) renderSnapshot(sn *Snapshot) xmlSnapshot {
	progress := "0%"
	if sn.State == "completed" {
		progress = "100%"
	}
	return xmlSnapshot{sn.ID, sn.VolumeID, sn.State, ts(sn.StartTime), progress, s.cfg.Account, sn.SizeGiB, sn.Description, sn.Encrypted, renderTags(sn.Tags)}
}

func (s *Service) createSnapshot(ctx context.Context, req *Request) (any, error) {
	volID, err := req.Params.Required("VolumeId")
	if err != nil {
		return nil, err
	}
	v, err := s.lookupVolume(volID)
	if err != nil {
		return nil, err
	}
	if v.State == "creating" {
		return nil, awserr.BadRequest("IncorrectState", "Volume '%s' is in the 'creating' state.", volID)
	}
	tags, err := tagsFor(req.Params, "snapshot")
	if err != nil {
		return nil, err
	}
	sn := &Snapshot{ID: newID("snap"), VolumeID: volID, SizeGiB: v.SizeGiB, Description: req.Params.Get("Description"), State: "pending",
		StartTime: req.now, ReadyAt: req.now.Add(s.cfg.VolumeCreateDelay), Encrypted: v.Encrypted, Tags: tags}
	s.st.Snapshots[sn.ID] = sn
	s.markDirty()
	return s.renderSnapshot(sn), nil
}

func (s *Service) deleteSnapshot(ctx context.Context, req *Request) (any, error) {
	id, err := req.Params.Required("SnapshotId")
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(id, "snap-") {
		return nil, awserr.BadRequest("InvalidSnapshotID.Malformed", "Invalid id: \"%s\" (expecting \"snap-...\")", id)
	}
	if s.st.Snapshots[id] == nil {
		return nil, awserr.BadRequest("InvalidSnapshot.NotFound", "The snapshot '%s' does not exist.", id)
	}
	delete(s.st.Snapshots, id)
	s.markDirty()
	return returnTrue(), nil
}

func snapshotFilter(s *Service, sn *Snapshot) getter {
	return func(name string) ([]string, bool) {
		switch name {
		case "snapshot-id":
			return one(sn.ID), true
		case "volume-id":
			return one(sn.VolumeID), true
		case "status":
			return one(sn.State), true
		case "owner-id":
			return one(s.cfg.Account), true
		case "description":
			return []string{sn.Description}, true
		case "volume-size":
			return one(strconv.Itoa(sn.SizeGiB)), true
		case "encrypted":
			return one(strconv.FormatBool(sn.Encrypted)), true
		}
		return nil, false
	}
}

func (s *Service) describeSnapshots(ctx context.Context, req *Request) (any, error) {
	filters, err := req.Params.Filters()
	if err != nil {
		return nil, err
	}
	if err := validateFilters(filters, snapshotFilter(s, &Snapshot{})); err != nil {
		return nil, err
	}
	for _, owner := range req.Params.List("Owner") {
		if owner != "self" && owner != s.cfg.Account {
			return &struct {
				Snapshots []xmlSnapshot `xml:"snapshotSet>item"`
			}{}, nil
		}
	}
	want, byID := ids(req.Params, "SnapshotId")
	for id := range want {
		if s.st.Snapshots[id] == nil {
			return nil, awserr.BadRequest("InvalidSnapshot.NotFound", "The snapshot '%s' does not exist.", id)
		}
	}
	var list []*Snapshot
	for _, sn := range s.st.Snapshots {
		if (!byID || want[sn.ID]) && matches(filters, sn.Tags, snapshotFilter(s, sn)) {
			list = append(list, sn)
		}
	}
	page, next, err := paginate(list, req.Params, func(sn *Snapshot) string { return sn.ID }, 5, 1000)
	if err != nil {
		return nil, err
	}
	out := struct {
		Snapshots []xmlSnapshot `xml:"snapshotSet>item"`
		NextToken string        `xml:"nextToken,omitempty"`
	}{NextToken: next}
	for _, sn := range page {
		out.Snapshots = append(out.Snapshots, s.renderSnapshot(sn))
	}
	return out, nil
}

// settleEBS completes due EBS transitions.
func (s *Service) settleEBS(ctx context.Context, now time.Time) {
	for _, v := range s.st.Volumes {
		if v.State == "creating" && !now.Before(v.ReadyAt) {
			v.State = "available"
			s.markDirty()
		}
		kept := v.Attachments[:0]
		for _, a := range v.Attachments {
			if now.Before(a.ReadyAt) || a.State == "attached" {
				kept = append(kept, a)
				continue
			}
			s.markDirty()
			switch a.State {
			case "attaching":
				a.State = "attached"
				if err := s.hooks.VolumeAttached(ctx, v, a); err != nil {
					s.log.Error("datapath: attach volume", "volume", v.ID, "err", err)
				}
				kept = append(kept, a)
			case "detaching":
				if err := s.hooks.VolumeDetached(ctx, v, a.InstanceID); err != nil {
					s.log.Error("datapath: detach volume", "volume", v.ID, "err", err)
				}
			}
		}
		v.Attachments = kept
		if len(kept) == 0 && v.State == "in-use" {
			v.State = "available"
			s.markDirty()
		}
		if m := v.Modification; m != nil && m.State != "completed" && !now.Before(m.ReadyAt) {
			if m.State == "modifying" {
				m.State = "optimizing"
				m.ReadyAt = now.Add(s.cfg.VolumeCreateDelay)
			} else {
				m.State = "completed"
			}
			s.markDirty()
		}
	}
	for _, sn := range s.st.Snapshots {
		if sn.State == "pending" && !now.Before(sn.ReadyAt) {
			sn.State = "completed"
			s.markDirty()
		}
	}
}
