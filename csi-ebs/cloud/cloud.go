// Package cloud is the EBS CSI driver's boundary to EC2, in two layers: EC2
// lists only the aws-sdk-go-v2 methods the driver calls, and Cloud offers
// domain operations (CreateDisk, AttachDisk, WaitAttached, ...) that never
// expose SDK types.
//
// Lookups of single volumes and instances from concurrent RPCs are merged
// into one Describe call (a short window, up to 200 IDs), and waiting for a
// state polls through the same batches with backoff, so N concurrent
// attaches cost far fewer than N Describe calls. Every mutation carries a
// deterministic ClientToken where EC2 takes one.
//
//	c, err := cloud.New(ctx, cloud.Options{Metrics: cloud.NewMetrics(reg)}, log)
//	disk, err := c.CreateDisk(ctx, "pvc-123", cloud.DiskOptions{SizeGiB: 10, Type: "gp3", AZ: "us-west-2a"})
//	dev, err := c.AttachDisk(ctx, disk.ID, "i-0abc")
package cloud

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// Tags the driver puts on what it creates.
const (
	TagVolumeName   = "CSIVolumeName"
	TagSnapshotName = "CSIVolumeSnapshotName"
	TagCloneFor     = "berth.io/csi-clone-for"
	TagManaged      = "ebs.csi.aws.com/cluster"
)

// EC2 is the part of the EC2 client the driver uses.
type EC2 interface {
	CreateVolume(context.Context, *ec2.CreateVolumeInput, ...func(*ec2.Options)) (*ec2.CreateVolumeOutput, error)
	DeleteVolume(context.Context, *ec2.DeleteVolumeInput, ...func(*ec2.Options)) (*ec2.DeleteVolumeOutput, error)
	DescribeVolumes(context.Context, *ec2.DescribeVolumesInput, ...func(*ec2.Options)) (*ec2.DescribeVolumesOutput, error)
	AttachVolume(context.Context, *ec2.AttachVolumeInput, ...func(*ec2.Options)) (*ec2.AttachVolumeOutput, error)
	DetachVolume(context.Context, *ec2.DetachVolumeInput, ...func(*ec2.Options)) (*ec2.DetachVolumeOutput, error)
	ModifyVolume(context.Context, *ec2.ModifyVolumeInput, ...func(*ec2.Options)) (*ec2.ModifyVolumeOutput, error)
	DescribeVolumesModifications(context.Context, *ec2.DescribeVolumesModificationsInput, ...func(*ec2.Options)) (*ec2.DescribeVolumesModificationsOutput, error)
	CreateSnapshot(context.Context, *ec2.CreateSnapshotInput, ...func(*ec2.Options)) (*ec2.CreateSnapshotOutput, error)
	DeleteSnapshot(context.Context, *ec2.DeleteSnapshotInput, ...func(*ec2.Options)) (*ec2.DeleteSnapshotOutput, error)
	DescribeSnapshots(context.Context, *ec2.DescribeSnapshotsInput, ...func(*ec2.Options)) (*ec2.DescribeSnapshotsOutput, error)
	DescribeInstances(context.Context, *ec2.DescribeInstancesInput, ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error)
	CreateTags(context.Context, *ec2.CreateTagsInput, ...func(*ec2.Options)) (*ec2.CreateTagsOutput, error)
}

var _ EC2 = (*ec2.Client)(nil)

// Disk is an EBS volume.
type Disk struct {
	ID, AZ, Type, State, SnapshotID string
	SizeGiB, IOPS, Throughput       int32
	Encrypted, MultiAttach          bool
	Tags                            map[string]string
	Attachments                     []Attachment
}

// Attachment is one attachment of a disk.
type Attachment struct {
	InstanceID, Device, State string
}

// AttachedTo returns the attachment to instanceID, if any.
func (d *Disk) AttachedTo(instanceID string) (Attachment, bool) {
	for _, a := range d.Attachments {
		if a.InstanceID == instanceID {
			return a, true
		}
	}
	return Attachment{}, false
}

// Snapshot is an EBS snapshot.
type Snapshot struct {
	ID, VolumeID, State string
	SizeGiB             int32
	StartTime           time.Time
	Tags                map[string]string
}

// Ready reports whether the snapshot can be restored.
func (s *Snapshot) Ready() bool { return s.State == "completed" }

// Instance is an EC2 instance.
type Instance struct {
	ID, AZ, Type, State string
}

// DiskOptions describe a new disk.
type DiskOptions struct {
	SizeGiB               int32
	Type                  string
	IOPS, Throughput      int32
	Encrypted             bool
	KMSKeyID              string
	AZ                    string
	SnapshotID            string
	MultiAttach           bool
	Tags                  map[string]string
	ClientTokenGeneration int // bumped when an earlier token is burned
}

// ModifyOptions change a disk; zero fields stay.
type ModifyOptions struct {
	SizeGiB, IOPS, Throughput int32
	Type                      string
}

// Cloud is the domain interface of the driver.
type Cloud interface {
	CreateDisk(ctx context.Context, name string, opts DiskOptions) (*Disk, error)
	DeleteDisk(ctx context.Context, id string) error
	GetDisk(ctx context.Context, id string) (*Disk, error)
	FindDisk(ctx context.Context, name string) (*Disk, error)
	ListDisks(ctx context.Context) ([]*Disk, error)
	AttachDisk(ctx context.Context, volumeID, instanceID string) (device string, err error)
	DetachDisk(ctx context.Context, volumeID, instanceID string) error
	ModifyDisk(ctx context.Context, id string, opts ModifyOptions) (*Disk, error)
	TagDisk(ctx context.Context, id string, tags map[string]string) error
	GetInstance(ctx context.Context, id string) (*Instance, error)
	CreateSnapshot(ctx context.Context, name, volumeID string, tags map[string]string) (*Snapshot, error)
	DeleteSnapshot(ctx context.Context, id string) error
	GetSnapshot(ctx context.Context, id string) (*Snapshot, error)
	FindSnapshot(ctx context.Context, name string) (*Snapshot, error)
	ListSnapshots(ctx context.Context, volumeID string) ([]*Snapshot, error)
	WaitSnapshot(ctx context.Context, id string) (*Snapshot, error)
}

// Options tune the cloud layer.
type Options struct {
	// BatchDelay is how long a Describe batch stays open (default 20ms).
	BatchDelay time.Duration
	// Poll is the first wait between state polls (default 250ms); it grows
	// ×1.5 up to MaxPoll (default 5s).
	Poll, MaxPoll time.Duration
	// AttachTimeout bounds waiting for attached/detached (default 2m).
	AttachTimeout time.Duration
	Metrics       *Metrics
}

func (o *Options) defaults() {
	if o.BatchDelay == 0 {
		o.BatchDelay = 20 * time.Millisecond
	}
	if o.Poll == 0 {
		o.Poll = 250 * time.Millisecond
	}
	if o.MaxPoll == 0 {
		o.MaxPoll = 5 * time.Second
	}
	if o.AttachTimeout == 0 {
		o.AttachTimeout = 2 * time.Minute
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
}

// AWS implements Cloud over an EC2 client.
type AWS struct {
	ec2  EC2
	opts Options
	log  *slog.Logger

	volumes   *batcher[*Disk]
	instances *batcher[*Instance]
	attached  *batcher[[]string] // devices in use, by instance

	devMu    sync.Mutex
	reserved map[string]map[string]string // instance → device → volume being attached
}

var _ Cloud = (*AWS)(nil)

// Load builds the EC2 client with the default SDK configuration chain
// (AWS_ENDPOINT_URL, IMDS credentials and region, ...), patient retries and
// the API metrics.
func Load(ctx context.Context, opts Options, region string, log *slog.Logger) (*AWS, error) {
	opts.defaults()
	loadOpts := []func(*config.LoadOptions) error{
		config.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = 10
				o.MaxBackoff = 10 * time.Second
				o.RateLimiter = ratelimit.None
			})
		}),
	}
	if region != "" {
		loadOpts = append(loadOpts, config.WithRegion(region))
	} else {
		loadOpts = append(loadOpts, config.WithEC2IMDSRegion())
	}
	cfg, err := config.LoadDefaultConfig(ctx, loadOpts...)
	if err != nil {
		return nil, fmt.Errorf("load aws config: %w", err)
	}
	cfg.APIOptions = append(cfg.APIOptions, opts.Metrics.apiOptions)
	return New(ec2.NewFromConfig(cfg), opts, log), nil
}

// New returns the cloud layer over an EC2 client.
func New(client EC2, opts Options, log *slog.Logger) *AWS {
	opts.defaults()
	c := &AWS{ec2: client, opts: opts, log: log.With("component", "cloud"), reserved: map[string]map[string]string{}}
	// Batches look IDs up through a filter (an unknown ID is then simply
	// absent instead of failing its neighbours); EC2 takes at most 200
	// values per filter.
	c.volumes = newBatcher(opts.BatchDelay, maxFilterValues, c.describeVolumes)
	c.instances = newBatcher(opts.BatchDelay, maxFilterValues, c.describeInstances)
	c.attached = newBatcher(opts.BatchDelay, maxFilterValues, c.describeAttachedDevices)
	return c
}

// maxFilterValues is EC2's limit of values in one filter.
const maxFilterValues = 200

// ClientToken derives EC2's idempotency token from a CSI name.
func ClientToken(name string, generation int) string {
	sum := sha256.Sum256([]byte(name))
	tok := hex.EncodeToString(sum[:])
	if generation > 0 {
		tok = tok[:56] + "-" + strconv.Itoa(generation+1)
	}
	return tok
}

func tagList(tags map[string]string) []types.Tag {
	keys := make([]string, 0, len(tags))
	for k := range tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]types.Tag, 0, len(keys))
	for _, k := range keys {
		out = append(out, types.Tag{Key: aws.String(k), Value: aws.String(tags[k])})
	}
	return out
}

func tagMap(tags []types.Tag) map[string]string {
	m := make(map[string]string, len(tags))
	for _, t := range tags {
		m[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return m
}

func toDisk(v types.Volume) *Disk {
	d := &Disk{ID: aws.ToString(v.VolumeId), AZ: aws.ToString(v.AvailabilityZone), Type: string(v.VolumeType),
		State: string(v.State), SnapshotID: aws.ToString(v.SnapshotId), SizeGiB: aws.ToInt32(v.Size),
		IOPS: aws.ToInt32(v.Iops), Throughput: aws.ToInt32(v.Throughput), Encrypted: aws.ToBool(v.Encrypted),
		MultiAttach: aws.ToBool(v.MultiAttachEnabled), Tags: tagMap(v.Tags)}
	for _, a := range v.Attachments {
		d.Attachments = append(d.Attachments, Attachment{InstanceID: aws.ToString(a.InstanceId), Device: aws.ToString(a.Device), State: string(a.State)})
	}
	return d
}

func toSnapshot(s types.Snapshot) *Snapshot {
	return &Snapshot{ID: aws.ToString(s.SnapshotId), VolumeID: aws.ToString(s.VolumeId), State: string(s.State),
		SizeGiB: aws.ToInt32(s.VolumeSize), StartTime: aws.ToTime(s.StartTime), Tags: tagMap(s.Tags)}
}

// validID keeps IDs EC2 would reject as malformed out of batches, so one
// bad ID cannot fail its neighbours.
func validID(prefix, id string) bool {
	rest, ok := strings.CutPrefix(id, prefix+"-")
	if !ok || len(rest) < 8 || len(rest) > 17 {
		return false
	}
	for _, r := range rest {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
			return false
		}
	}
	return true
}

// describeVolumes fetches volumes by filter (absent IDs are simply not
// returned: they are not found).
func (c *AWS) describeVolumes(ctx context.Context, ids []string) (map[string]*Disk, error) {
	out := map[string]*Disk{}
	disks, err := c.listVolumes(ctx, []types.Filter{{Name: aws.String("volume-id"), Values: ids}})
	for _, d := range disks {
		out[d.ID] = d
	}
	return out, err
}

func (c *AWS) listVolumes(ctx context.Context, filters []types.Filter) ([]*Disk, error) {
	var disks []*Disk
	p := ec2.NewDescribeVolumesPaginator(c.ec2, &ec2.DescribeVolumesInput{Filters: filters, MaxResults: aws.Int32(500)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, translate("describe volumes", err)
		}
		for _, v := range page.Volumes {
			disks = append(disks, toDisk(v))
		}
	}
	return disks, nil
}

func (c *AWS) describeInstances(ctx context.Context, ids []string) (map[string]*Instance, error) {
	out := map[string]*Instance{}
	p := ec2.NewDescribeInstancesPaginator(c.ec2, &ec2.DescribeInstancesInput{
		Filters: []types.Filter{{Name: aws.String("instance-id"), Values: ids}}, MaxResults: aws.Int32(1000)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, translate("describe instances", err)
		}
		for _, r := range page.Reservations {
			for _, i := range r.Instances {
				in := &Instance{ID: aws.ToString(i.InstanceId), Type: string(i.InstanceType)}
				if i.Placement != nil {
					in.AZ = aws.ToString(i.Placement.AvailabilityZone)
				}
				if i.State != nil {
					in.State = string(i.State.Name)
				}
				out[in.ID] = in
			}
		}
	}
	return out, nil
}

// describeAttachedDevices returns the device names in use on instances.
func (c *AWS) describeAttachedDevices(ctx context.Context, ids []string) (map[string][]string, error) {
	disks, err := c.listVolumes(ctx, []types.Filter{{Name: aws.String("attachment.instance-id"), Values: ids}})
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, d := range disks {
		for _, a := range d.Attachments {
			out[a.InstanceID] = append(out[a.InstanceID], a.Device)
		}
	}
	return out, nil
}

// GetDisk returns one volume (batched); ErrNotFound when it does not exist.
func (c *AWS) GetDisk(ctx context.Context, id string) (*Disk, error) {
	if !validID("vol", id) {
		return nil, fmt.Errorf("volume %q: %w", id, ErrNotFound)
	}
	d, ok, err := c.volumes.get(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("volume %s: %w", id, err)
	}
	if !ok {
		return nil, fmt.Errorf("volume %s: %w", id, ErrNotFound)
	}
	return d, nil
}

// GetInstance returns one instance (batched); ErrNotFound when it does not
// exist or is terminated.
func (c *AWS) GetInstance(ctx context.Context, id string) (*Instance, error) {
	if !validID("i", id) {
		return nil, fmt.Errorf("instance %q: %w", id, ErrNotFound)
	}
	in, ok, err := c.instances.get(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("instance %s: %w", id, err)
	}
	if !ok || in.State == "terminated" || in.State == "shutting-down" {
		return nil, fmt.Errorf("instance %s: %w", id, ErrNotFound)
	}
	return in, nil
}

// FindDisk returns the volume created for a CSI name; ErrNotFound if none.
func (c *AWS) FindDisk(ctx context.Context, name string) (*Disk, error) {
	disks, err := c.listVolumes(ctx, []types.Filter{{Name: aws.String("tag:" + TagVolumeName), Values: []string{name}}})
	if err != nil {
		return nil, err
	}
	if len(disks) == 0 {
		return nil, fmt.Errorf("volume named %q: %w", name, ErrNotFound)
	}
	return disks[0], nil
}

// ListDisks returns every volume the driver created, sorted by ID.
func (c *AWS) ListDisks(ctx context.Context) ([]*Disk, error) {
	disks, err := c.listVolumes(ctx, []types.Filter{{Name: aws.String("tag-key"), Values: []string{TagVolumeName}}})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(disks, func(a, b *Disk) int { return strings.Compare(a.ID, b.ID) })
	return disks, nil
}

// CreateDisk creates a volume named name (idempotent by ClientToken) and
// waits until it is available.
func (c *AWS) CreateDisk(ctx context.Context, name string, o DiskOptions) (*Disk, error) {
	tags := map[string]string{TagVolumeName: name, TagManaged: "true"}
	for k, v := range o.Tags {
		tags[k] = v
	}
	in := &ec2.CreateVolumeInput{
		AvailabilityZone:  aws.String(o.AZ),
		Size:              aws.Int32(o.SizeGiB),
		VolumeType:        types.VolumeType(o.Type),
		Encrypted:         aws.Bool(o.Encrypted),
		ClientToken:       aws.String(ClientToken(name, o.ClientTokenGeneration)),
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeVolume, Tags: tagList(tags)}},
	}
	if o.IOPS > 0 {
		in.Iops = aws.Int32(o.IOPS)
	}
	if o.Throughput > 0 {
		in.Throughput = aws.Int32(o.Throughput)
	}
	if o.KMSKeyID != "" {
		in.KmsKeyId = aws.String(o.KMSKeyID)
	}
	if o.SnapshotID != "" {
		in.SnapshotId = aws.String(o.SnapshotID)
	}
	if o.MultiAttach {
		in.MultiAttachEnabled = aws.Bool(true)
	}
	out, err := c.ec2.CreateVolume(ctx, in)
	if err != nil {
		return nil, translate("create volume "+name, err)
	}
	id := aws.ToString(out.VolumeId)
	c.log.Info("volume created", "volume", id, "name", name, "az", o.AZ, "sizeGiB", o.SizeGiB, "type", o.Type)
	return c.waitDisk(ctx, id, "available", func(d *Disk) (bool, error) {
		switch d.State {
		case "available", "in-use":
			return true, nil
		case "error":
			return false, fmt.Errorf("volume %s failed to create", id)
		}
		return false, nil
	})
}

// waitDisk polls a volume (batched) until done says so, with backoff.
func (c *AWS) waitDisk(ctx context.Context, id, what string, done func(*Disk) (bool, error)) (*Disk, error) {
	delay := c.opts.Poll
	for {
		d, err := c.GetDisk(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("wait for %s %s: %w", id, what, err)
		}
		ok, err := done(d)
		if err != nil {
			return nil, err
		}
		if ok {
			return d, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for %s %s (state %s): %w", id, what, d.State, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(time.Duration(float64(delay)*1.5), c.opts.MaxPoll)
	}
}

// DeleteDisk deletes a volume; ErrNotFound when it is already gone.
func (c *AWS) DeleteDisk(ctx context.Context, id string) error {
	if !validID("vol", id) {
		return fmt.Errorf("volume %q: %w", id, ErrNotFound)
	}
	_, err := c.ec2.DeleteVolume(ctx, &ec2.DeleteVolumeInput{VolumeId: aws.String(id)})
	if err != nil {
		return translate("delete volume "+id, err)
	}
	c.log.Info("volume deleted", "volume", id)
	return nil
}

// deviceNames are the names the driver hands out: /dev/xvdba … /dev/xvdcz
// (52 names, more than any instance's attachment limit here).
var deviceNames = func() []string {
	var out []string
	for _, a := range "bc" {
		for b := 'a'; b <= 'z'; b++ {
			out = append(out, "/dev/xvd"+string(a)+string(b))
		}
	}
	return out
}()

// reserveDevice picks a device name free on the instance, neither used in
// EC2 nor reserved by a concurrent attach of this process.
func (c *AWS) reserveDevice(instanceID, volumeID string, inUse []string, skip map[string]bool) (string, error) {
	c.devMu.Lock()
	defer c.devMu.Unlock()
	res := c.reserved[instanceID]
	if res == nil {
		res = map[string]string{}
		c.reserved[instanceID] = res
	}
	for _, n := range deviceNames {
		if _, taken := res[n]; taken || skip[n] || slices.Contains(inUse, n) {
			continue
		}
		res[n] = volumeID
		return n, nil
	}
	return "", fmt.Errorf("no free device name on %s: %w", instanceID, ErrAttachLimit)
}

func (c *AWS) releaseDevice(instanceID, device string) {
	c.devMu.Lock()
	defer c.devMu.Unlock()
	delete(c.reserved[instanceID], device)
	if len(c.reserved[instanceID]) == 0 {
		delete(c.reserved, instanceID)
	}
}

// AttachDisk attaches a volume to an instance and waits until it is
// attached; it returns the device name. Already attached is success.
func (c *AWS) AttachDisk(ctx context.Context, volumeID, instanceID string) (string, error) {
	d, err := c.GetDisk(ctx, volumeID)
	if err != nil {
		return "", err
	}
	if a, ok := d.AttachedTo(instanceID); ok && a.State != "detaching" {
		return a.Device, c.waitAttached(ctx, volumeID, instanceID)
	} else if ok {
		// A detach from this instance is finishing: let it, then attach anew.
		if d, err = c.waitDetached(ctx, volumeID, instanceID); err != nil {
			return "", err
		}
	}
	if len(d.Attachments) > 0 && !d.MultiAttach {
		return "", fmt.Errorf("volume %s is attached to %s: %w", volumeID, d.Attachments[0].InstanceID, ErrInUse)
	}
	inst, err := c.GetInstance(ctx, instanceID)
	if err != nil {
		return "", err
	}
	if inst.AZ != d.AZ {
		return "", fmt.Errorf("volume %s is in %s, instance %s in %s: %w", volumeID, d.AZ, instanceID, inst.AZ, ErrInvalidArgument)
	}
	skip := map[string]bool{}
	for attempt := 0; ; attempt++ {
		inUse, _, err := c.attached.get(ctx, instanceID)
		if err != nil {
			return "", fmt.Errorf("devices of %s: %w", instanceID, err)
		}
		dev, err := c.reserveDevice(instanceID, volumeID, inUse, skip)
		if err != nil {
			return "", err
		}
		_, err = c.ec2.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(volumeID), InstanceId: aws.String(instanceID), Device: aws.String(dev)})
		if err != nil {
			c.releaseDevice(instanceID, dev)
			// Another attacher took the name between our look and the call.
			if errorCode(err) == "InvalidParameterValue" && strings.Contains(err.Error(), "already in use") && attempt < 5 {
				skip[dev] = true
				continue
			}
			return "", translate(fmt.Sprintf("attach %s to %s at %s", volumeID, instanceID, dev), err)
		}
		c.log.Info("volume attaching", "volume", volumeID, "instance", instanceID, "device", dev)
		err = c.waitAttached(ctx, volumeID, instanceID)
		c.releaseDevice(instanceID, dev)
		return dev, err
	}
}

func (c *AWS) waitAttached(ctx context.Context, volumeID, instanceID string) error {
	ctx, cancel := context.WithTimeout(ctx, c.opts.AttachTimeout)
	defer cancel()
	_, err := c.waitDisk(ctx, volumeID, "attached to "+instanceID, func(d *Disk) (bool, error) {
		a, ok := d.AttachedTo(instanceID)
		if !ok {
			return false, fmt.Errorf("volume %s: attachment to %s vanished while attaching", volumeID, instanceID)
		}
		return a.State == "attached", nil
	})
	return err
}

// DetachDisk detaches a volume from an instance and waits until it is
// gone; a volume or attachment that is already gone is success.
func (c *AWS) DetachDisk(ctx context.Context, volumeID, instanceID string) error {
	d, err := c.GetDisk(ctx, volumeID)
	if err != nil {
		return err
	}
	if _, ok := d.AttachedTo(instanceID); !ok {
		return nil
	}
	_, err = c.ec2.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(volumeID), InstanceId: aws.String(instanceID)})
	if err != nil {
		err = translate(fmt.Sprintf("detach %s from %s", volumeID, instanceID), err)
		if errors.Is(err, ErrBusy) { // not attached (any more)
			return nil
		}
		return err
	}
	c.log.Info("volume detaching", "volume", volumeID, "instance", instanceID)
	_, err = c.waitDetached(ctx, volumeID, instanceID)
	return err
}

func (c *AWS) waitDetached(ctx context.Context, volumeID, instanceID string) (*Disk, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.AttachTimeout)
	defer cancel()
	return c.waitDisk(ctx, volumeID, "detached from "+instanceID, func(d *Disk) (bool, error) {
		_, ok := d.AttachedTo(instanceID)
		return !ok, nil
	})
}

// ModifyDisk changes size, type, IOPS or throughput and waits until the
// modification is usable (optimizing or completed). A no-op change makes
// no call.
func (c *AWS) ModifyDisk(ctx context.Context, id string, o ModifyOptions) (*Disk, error) {
	d, err := c.GetDisk(ctx, id)
	if err != nil {
		return nil, err
	}
	in := &ec2.ModifyVolumeInput{VolumeId: aws.String(id)}
	change := false
	if o.SizeGiB > d.SizeGiB {
		in.Size, change = aws.Int32(o.SizeGiB), true
	}
	if o.Type != "" && o.Type != d.Type {
		in.VolumeType, change = types.VolumeType(o.Type), true
	}
	if o.IOPS != 0 && o.IOPS != d.IOPS {
		in.Iops, change = aws.Int32(o.IOPS), true
	}
	if o.Throughput != 0 && o.Throughput != d.Throughput {
		in.Throughput, change = aws.Int32(o.Throughput), true
	}
	if !change {
		return d, nil
	}
	// One modification at a time: wait out a running one first.
	if err := c.waitModification(ctx, id, true); err != nil {
		return nil, err
	}
	if _, err := c.ec2.ModifyVolume(ctx, in); err != nil {
		return nil, translate("modify volume "+id, err)
	}
	c.log.Info("volume modifying", "volume", id, "sizeGiB", aws.ToInt32(in.Size), "type", in.VolumeType, "iops", aws.ToInt32(in.Iops), "throughput", aws.ToInt32(in.Throughput))
	if err := c.waitModification(ctx, id, false); err != nil {
		return nil, err
	}
	return c.GetDisk(ctx, id)
}

// waitModification waits until a volume's latest modification is
// optimizing (usable) or, with completed, finished.
func (c *AWS) waitModification(ctx context.Context, id string, completed bool) error {
	delay := c.opts.Poll
	for {
		out, err := c.ec2.DescribeVolumesModifications(ctx, &ec2.DescribeVolumesModificationsInput{VolumeIds: []string{id}})
		if err != nil {
			return translate("describe modifications of "+id, err)
		}
		state := types.VolumeModificationStateCompleted
		for _, m := range out.VolumesModifications {
			state = m.ModificationState
		}
		switch {
		case state == types.VolumeModificationStateFailed:
			return fmt.Errorf("modification of %s failed", id)
		case state == types.VolumeModificationStateCompleted:
			return nil
		case state == types.VolumeModificationStateOptimizing && !completed:
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for modification of %s (%s): %w", id, state, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(time.Duration(float64(delay)*1.5), c.opts.MaxPoll)
	}
}

// TagDisk adds or replaces tags of a volume.
func (c *AWS) TagDisk(ctx context.Context, id string, tags map[string]string) error {
	if len(tags) == 0 {
		return nil
	}
	_, err := c.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{id}, Tags: tagList(tags)})
	return translate("tag volume "+id, err)
}

// CreateSnapshot snapshots a volume, tagged with the CSI name.
func (c *AWS) CreateSnapshot(ctx context.Context, name, volumeID string, tags map[string]string) (*Snapshot, error) {
	all := map[string]string{TagSnapshotName: name, TagManaged: "true"}
	for k, v := range tags {
		all[k] = v
	}
	out, err := c.ec2.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: aws.String(volumeID),
		Description:       aws.String("Created by berth-csi-ebs for " + name),
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeSnapshot, Tags: tagList(all)}}})
	if err != nil {
		return nil, translate("create snapshot of "+volumeID, err)
	}
	s := &Snapshot{ID: aws.ToString(out.SnapshotId), VolumeID: volumeID, State: string(out.State), SizeGiB: aws.ToInt32(out.VolumeSize),
		StartTime: aws.ToTime(out.StartTime), Tags: tagMap(out.Tags)}
	c.log.Info("snapshot created", "snapshot", s.ID, "volume", volumeID, "name", name)
	return s, nil
}

// DeleteSnapshot deletes a snapshot; ErrNotFound when it is gone.
func (c *AWS) DeleteSnapshot(ctx context.Context, id string) error {
	if !validID("snap", id) {
		return fmt.Errorf("snapshot %q: %w", id, ErrNotFound)
	}
	_, err := c.ec2.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(id)})
	return translate("delete snapshot "+id, err)
}

func (c *AWS) listSnapshots(ctx context.Context, filters []types.Filter) ([]*Snapshot, error) {
	var out []*Snapshot
	p := ec2.NewDescribeSnapshotsPaginator(c.ec2, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}, Filters: filters, MaxResults: aws.Int32(1000)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, translate("describe snapshots", err)
		}
		for _, s := range page.Snapshots {
			out = append(out, toSnapshot(s))
		}
	}
	slices.SortFunc(out, func(a, b *Snapshot) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// GetSnapshot returns one snapshot; ErrNotFound when it does not exist.
func (c *AWS) GetSnapshot(ctx context.Context, id string) (*Snapshot, error) {
	if !validID("snap", id) {
		return nil, fmt.Errorf("snapshot %q: %w", id, ErrNotFound)
	}
	list, err := c.listSnapshots(ctx, []types.Filter{{Name: aws.String("snapshot-id"), Values: []string{id}}})
	if err != nil {
		return nil, err
	}
	if len(list) == 0 {
		return nil, fmt.Errorf("snapshot %s: %w", id, ErrNotFound)
	}
	return list[0], nil
}

// FindSnapshot returns the snapshot created for a CSI name.
func (c *AWS) FindSnapshot(ctx context.Context, name string) (*Snapshot, error) {
	list, err := c.listSnapshots(ctx, []types.Filter{{Name: aws.String("tag:" + TagSnapshotName), Values: []string{name}}})
	if err != nil {
		return nil, err
	}
	if len(list) == 0 {
		return nil, fmt.Errorf("snapshot named %q: %w", name, ErrNotFound)
	}
	return list[0], nil
}

// ListSnapshots returns the driver's snapshots, of one volume if volumeID
// is set, sorted by ID.
func (c *AWS) ListSnapshots(ctx context.Context, volumeID string) ([]*Snapshot, error) {
	filters := []types.Filter{{Name: aws.String("tag-key"), Values: []string{TagSnapshotName}}}
	if volumeID != "" {
		filters = append(filters, types.Filter{Name: aws.String("volume-id"), Values: []string{volumeID}})
	}
	return c.listSnapshots(ctx, filters)
}

// WaitSnapshot waits until a snapshot is completed.
func (c *AWS) WaitSnapshot(ctx context.Context, id string) (*Snapshot, error) {
	delay := c.opts.Poll
	for {
		s, err := c.GetSnapshot(ctx, id)
		if err != nil {
			return nil, err
		}
		switch s.State {
		case "completed":
			return s, nil
		case "error":
			return nil, fmt.Errorf("snapshot %s failed", id)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for snapshot %s: %w", id, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(time.Duration(float64(delay)*1.5), c.opts.MaxPoll)
	}
}
