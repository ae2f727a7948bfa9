// Package ec2 is localcloud's EC2: the resource model (VPCs, subnets,
// security groups, instances, ENIs, EBS volumes and snapshots), the Query
// API handlers that aws-sdk-go-v2 and the aws CLI call, and the hooks that
// let the VPC-in-a-box datapath follow state changes.
//
// Every request runs under one lock: settle (complete due asynchronous
// transitions such as attaching → attached), the handler, then persist when
// anything changed. Handlers validate everything before they mutate, so a
// failed call leaves no trace.
package ec2

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/berth-io/berth/localcloud/awserr"
	"github.com/berth-io/berth/localcloud/awsquery"
	"github.com/berth-io/berth/localcloud/store"
)

// Config sets the emulated region and how slow asynchronous work is.
type Config struct {
	Region  string
	Account string
	// AZs are the availability zones of the region, e.g. us-west-2a..d.
	AZs []string
	// AttachDelay bounds how long an ENI or volume stays "attaching" or
	// "detaching"; each transition takes a random time in [Min, Max].
	AttachDelayMin, AttachDelayMax time.Duration
	// InstanceStartDelay is pending → running (and shutting-down → terminated).
	InstanceStartDelay time.Duration
	// VolumeCreateDelay is creating → available; snapshots take the same.
	VolumeCreateDelay time.Duration
	// Now is the clock (tests may replace it).
	Now func() time.Time
}

// DefaultConfig is us-west-2 with AWS-like latencies.
func DefaultConfig() Config {
	return Config{
		Region:             "us-west-2",
		Account:            "000000000000",
		AZs:                []string{"us-west-2a", "us-west-2b", "us-west-2c", "us-west-2d"},
		AttachDelayMin:     time.Second,
		AttachDelayMax:     3 * time.Second,
		InstanceStartDelay: 2 * time.Second,
		VolumeCreateDelay:  time.Second,
		Now:                time.Now,
	}
}

// Hooks are told about changes the datapath must mirror. They run under the
// service lock, after validation, and may fail the call (the datapath could
// not do it), in which case the handler undoes nothing it has not yet done:
// handlers call hooks before they commit the change.
type Hooks interface {
	// InstanceRunning / InstanceTerminated bracket an instance's life.
	InstanceRunning(ctx context.Context, inst *Instance, primary *ENI) error
	InstanceTerminated(ctx context.Context, inst *Instance) error
	// ENIAttached / ENIDetached follow attachments of secondary ENIs.
	ENIAttached(ctx context.Context, inst *Instance, eni *ENI) error
	ENIDetached(ctx context.Context, instanceID string, eni *ENI) error
	// AddressesChanged is called when an ENI's IPv4/IPv6 addresses or
	// prefixes change.
	AddressesChanged(ctx context.Context, eni *ENI) error
	// TrunkChanged is called when a branch ENI is associated with, or
	// disassociated from, the trunk ENI.
	TrunkChanged(ctx context.Context, trunk *ENI) error
	// VolumeAttached / VolumeDetached follow EBS attachments.
	VolumeAttached(ctx context.Context, vol *Volume, att *VolumeAttachment) error
	VolumeDetached(ctx context.Context, vol *Volume, instanceID string) error
	VolumeDeleted(ctx context.Context, vol *Volume) error
}

// Service is localcloud's EC2.
type Service struct {
	cfg   Config
	log   *slog.Logger
	path  string
	mu    sync.Mutex
	st    *State
	hooks Hooks
	// dirty is set by settle and handlers; persist clears it.
	dirty    bool
	handlers map[string]handler
}

// handler runs one action under the lock. It returns the response body to
// render (a struct with xml tags) and whether it changed state.
type handler func(ctx context.Context, req *Request) (any, error)

// Request is one EC2 API call.
type Request struct {
	Action    string
	Params    awsquery.Params
	Account   string
	CallerARN string
	RequestID string
	now       time.Time
}

// New loads (or creates) the EC2 state in stateDir.
func New(cfg Config, stateDir string, log *slog.Logger) (*Service, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Service{cfg: cfg, log: log.With("service", "ec2"), path: filepath.Join(stateDir, "ec2.json"), st: newState(), hooks: nopHooks{}}
	found, err := store.Load(s.path, s.st)
	if err != nil {
		return nil, err
	}
	s.st.fillMaps()
	if !found {
		s.createDefaultVPC()
		if err := store.Save(s.path, s.st, 0o600); err != nil {
			return nil, err
		}
	}
	h, err := s.allHandlers()
	if err != nil {
		return nil, err
	}
	s.handlers = h
	return s, nil
}

// SetHooks installs the datapath hooks.
func (s *Service) SetHooks(h Hooks) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hooks = h
}

// Config returns the service configuration.
func (s *Service) Config() Config { return s.cfg }

// Actions lists every implemented action.
func (s *Service) Actions() []string {
	out := make([]string, 0, len(s.handlers))
	for a := range s.handlers {
		out = append(out, a)
	}
	return out
}

// Handle runs one API call.
func (s *Service) Handle(ctx context.Context, req *Request) (any, error) {
	h, ok := s.handlers[req.Action]
	if !ok {
		return nil, awserr.BadRequest("InvalidAction", "The action %s is not valid for this web service.", req.Action)
	}
	if dry, err := req.Params.Bool("DryRun", false); err != nil {
		return nil, err
	} else if dry {
		return nil, awserr.New(412, "DryRunOperation", "Request would have succeeded, but DryRun flag is set.")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	req.now = s.cfg.Now()
	s.settle(ctx, req.now)
	resp, err := h(ctx, req)
	if perr := s.persistLocked(); perr != nil {
		s.log.Error("persist ec2 state", "err", perr)
		if err == nil {
			err = awserr.As(perr)
		}
	}
	return resp, err
}

// View runs fn with a settled, read-only view of the state (IMDS and other
// services use it). fn must not keep references past its return.
func (s *Service) View(ctx context.Context, fn func(st *State)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settle(ctx, s.cfg.Now())
	if err := s.persistLocked(); err != nil {
		s.log.Error("persist ec2 state", "err", err)
	}
	fn(s.st)
}

// Update runs fn with the state for changes made outside the API (fault
// injection, the admin endpoint); the state is persisted afterwards.
func (s *Service) Update(ctx context.Context, fn func(st *State) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settle(ctx, s.cfg.Now())
	err := fn(s.st)
	s.dirty = true
	if perr := s.persistLocked(); perr != nil && err == nil {
		err = perr
	}
	return err
}

func (s *Service) persistLocked() error {
	if !s.dirty {
		return nil
	}
	if err := store.Save(s.path, s.st, 0o600); err != nil {
		return err
	}
	s.dirty = false
	return nil
}

// markDirty records that the state changed and must be persisted.
func (s *Service) markDirty() { s.dirty = true }

func (st *State) fillMaps() {
	fresh := newState()
	if st.VPCs == nil {
		st.VPCs = fresh.VPCs
	}
	if st.Subnets == nil {
		st.Subnets = fresh.Subnets
	}
	if st.SecurityGroups == nil {
		st.SecurityGroups = fresh.SecurityGroups
	}
	if st.Instances == nil {
		st.Instances = fresh.Instances
	}
	if st.ENIs == nil {
		st.ENIs = fresh.ENIs
	}
	if st.Volumes == nil {
		st.Volumes = fresh.Volumes
	}
	if st.Snapshots == nil {
		st.Snapshots = fresh.Snapshots
	}
	if st.ClientTokens == nil {
		st.ClientTokens = fresh.ClientTokens
	}
	if st.TrunkAssociations == nil {
		st.TrunkAssociations = fresh.TrunkAssociations
	}
	for _, sub := range st.Subnets {
		if sub.Used == nil {
			sub.Used = map[string]string{}
		}
	}
}

// newID returns prefix-<17 hex digits>, the shape of current EC2 IDs.
func newID(prefix string) string {
	var b [9]byte
	_, _ = rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])[:17]
}

// delay returns a random duration in [min, max].
func delay(min, max time.Duration) time.Duration {
	if max <= min {
		return min
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	n := uint64(0)
	for _, x := range b {
		n = n<<8 | uint64(x)
	}
	return min + time.Duration(n%uint64(max-min+1))
}

func (s *Service) attachDelay() time.Duration {
	return delay(s.cfg.AttachDelayMin, s.cfg.AttachDelayMax)
}

// idempotent looks up a ClientToken; it returns the ID created by an earlier
// call with the same token, or "".
func (s *Service) idempotent(action, token string) string {
	if token == "" {
		return ""
	}
	return s.st.ClientTokens[action+"/"+token]
}

func (s *Service) rememberToken(action, token, id string) {
	if token != "" {
		s.st.ClientTokens[action+"/"+token] = id
	}
}

func (s *Service) allHandlers() (map[string]handler, error) {
	out := map[string]handler{}
	for _, group := range []map[string]handler{
		s.vpcHandlers(),
		s.instanceHandlers(),
		s.eniHandlers(),
		s.trunkHandlers(),
		s.ebsHandlers(),
		s.tagHandlers(),
	} {
		for name, h := range group {
			if _, dup := out[name]; dup {
				return nil, fmt.Errorf("ec2: action %s registered twice", name)
			}
			out[name] = h
		}
	}
	return out, nil
}

type nopHooks struct{}

func (nopHooks) InstanceRunning(context.Context, *Instance, *ENI) error           { return nil }
func (nopHooks) InstanceTerminated(context.Context, *Instance) error              { return nil }
func (nopHooks) ENIAttached(context.Context, *Instance, *ENI) error               { return nil }
func (nopHooks) ENIDetached(context.Context, string, *ENI) error                  { return nil }
func (nopHooks) AddressesChanged(context.Context, *ENI) error                     { return nil }
func (nopHooks) TrunkChanged(context.Context, *ENI) error                         { return nil }
func (nopHooks) VolumeAttached(context.Context, *Volume, *VolumeAttachment) error { return nil }
func (nopHooks) VolumeDetached(context.Context, *Volume, string) error            { return nil }
func (nopHooks) VolumeDeleted(context.Context, *Volume) error                     { return nil }

// LockedState returns the state to a hook: hooks run while the service
// lock is held, so they may read (not keep) the state through it. Calling
// it anywhere else is a data race.
func (s *Service) LockedState() *State { return s.st }
