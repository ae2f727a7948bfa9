// Package eks serves the EKS management API for the clusters a
// berth-controlplane hosts (REST-JSON, SigV4-signed, so `aws eks` and
// aws-sdk-go-v2's eks client work unchanged) and keeps their access
// entries, which the authenticator and the RBAC reconciler read.
package eks

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/berth-io/berth/controlplane/authn"
	"github.com/berth-io/berth/controlplane/pki"
)

// Cluster is what DescribeCluster reports.
type Cluster struct {
	Name               string            `json:"name"`
	ARN                string            `json:"arn"`
	CreatedAt          time.Time         `json:"createdAt"`
	Version            string            `json:"version"`
	Endpoint           string            `json:"endpoint"`
	RoleARN            string            `json:"roleArn,omitempty"`
	Status             string            `json:"status"`
	PlatformVersion    string            `json:"platformVersion"`
	CAData             string            `json:"caData"`
	ServiceIPv4CIDR    string            `json:"serviceIpv4Cidr"`
	OIDCIssuer         string            `json:"oidcIssuer"`
	AuthenticationMode string            `json:"authenticationMode"`
	BootstrapAdmin     bool              `json:"bootstrapClusterCreatorAdminPermissions"`
	LogTypes           []string          `json:"logTypes,omitempty"`
	VPCID              string            `json:"vpcId,omitempty"`
	SubnetIDs          []string          `json:"subnetIds,omitempty"`
	SecurityGroupIDs   []string          `json:"securityGroupIds,omitempty"`
	Tags               map[string]string `json:"tags,omitempty"`
	// CreatorBootstrapped records that the creator's entry was made.
	CreatorBootstrapped bool `json:"creatorBootstrapped,omitempty"`
}

// AccessEntry is an EKS access entry with its policy associations.
type AccessEntry struct {
	PrincipalARN     string            `json:"principalArn"`
	ARN              string            `json:"accessEntryArn"`
	Type             string            `json:"type"`
	Username         string            `json:"username"`
	KubernetesGroups []string          `json:"kubernetesGroups"`
	CreatedAt        time.Time         `json:"createdAt"`
	ModifiedAt       time.Time         `json:"modifiedAt"`
	Tags             map[string]string `json:"tags,omitempty"`
	Policies         []Association     `json:"policies,omitempty"`
	ClientToken      string            `json:"clientRequestToken,omitempty"`
}

// Association is an access policy associated with an entry.
type Association struct {
	PolicyARN    string    `json:"policyArn"`
	ScopeType    string    `json:"scopeType"` // cluster | namespace
	Namespaces   []string  `json:"namespaces,omitempty"`
	AssociatedAt time.Time `json:"associatedAt"`
	ModifiedAt   time.Time `json:"modifiedAt"`
}

type state struct {
	Cluster Cluster                 `json:"cluster"`
	Entries map[string]*AccessEntry `json:"accessEntries"`
}

// Store keeps one cluster's EKS state in a JSON file, rewritten atomically
// on every change.
type Store struct {
	path string

	mu      sync.RWMutex
	st      state
	changed chan struct{}
}

// Open loads path, or starts with cluster when the file does not exist yet.
// Settings given on the command line (endpoint, CA, mode) replace the
// stored ones; access entries are kept.
func Open(path string, cluster Cluster) (*Store, error) {
	s := &Store{path: path, changed: make(chan struct{}, 1)}
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &s.st); err != nil {
			return nil, fmt.Errorf("eks state %s: %w", path, err)
		}
		cluster.CreatedAt = s.st.Cluster.CreatedAt
		cluster.CreatorBootstrapped = s.st.Cluster.CreatorBootstrapped
		// The authentication mode is changed through UpdateClusterConfig,
		// only forward (CONFIG_MAP → API_AND_CONFIG_MAP → API), as on EKS;
		// a restart with the first mode's flag does not undo that.
		if modeRank(s.st.Cluster.AuthenticationMode) > modeRank(cluster.AuthenticationMode) {
			cluster.AuthenticationMode = s.st.Cluster.AuthenticationMode
		}
		if s.st.Cluster.Tags != nil && cluster.Tags == nil {
			cluster.Tags = s.st.Cluster.Tags
		}
	case errors.Is(err, os.ErrNotExist):
	default:
		return nil, fmt.Errorf("eks state: %w", err)
	}
	if cluster.CreatedAt.IsZero() {
		cluster.CreatedAt = time.Now().UTC().Truncate(time.Millisecond)
	}
	s.st.Cluster = cluster
	if s.st.Entries == nil {
		s.st.Entries = map[string]*AccessEntry{}
	}
	return s, s.saveLocked()
}

// Changed is signalled after every change of the access entries.
func (s *Store) Changed() <-chan struct{} { return s.changed }

func (s *Store) saveLocked() error {
	b, err := json.MarshalIndent(&s.st, "", "  ")
	if err != nil {
		return err
	}
	if err := pki.WriteFile(s.path, b, 0o600); err != nil {
		return fmt.Errorf("save eks state: %w", err)
	}
	return nil
}

func (s *Store) notify() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// Cluster returns the cluster record.
func (s *Store) Cluster() Cluster {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.st.Cluster
}

// AccessEntry implements authn.Entries. The entry's own group
// (EntryGroup) is added so access policies bound by RBAC apply whatever
// the username template renders to.
func (s *Store) AccessEntry(principalARN string) (authn.Entry, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, ok := s.st.Entries[principalARN]
	if !ok {
		// ARNs are case-insensitive in their prefix; match as EKS does.
		for k, v := range s.st.Entries {
			if strings.EqualFold(k, principalARN) {
				e, ok = v, true
				break
			}
		}
	}
	if !ok {
		return authn.Entry{}, false
	}
	groups := append(slices.Clone(e.KubernetesGroups), EntryGroup(e.PrincipalARN))
	return authn.Entry{PrincipalARN: e.PrincipalARN, Type: e.Type, Username: e.Username, KubernetesGroups: groups}, true
}

// EntryGroup is the Kubernetes group every user of an access entry gets;
// RBAC bindings for the entry's access policies name it.
func EntryGroup(principalARN string) string {
	h := sha256.Sum256([]byte(strings.ToLower(principalARN)))
	return "eks:access-entry:" + hex.EncodeToString(h[:8])
}

// Entries returns copies of all access entries, sorted by principal.
func (s *Store) Entries() []AccessEntry {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]AccessEntry, 0, len(s.st.Entries))
	for _, e := range s.st.Entries {
		c := *e
		c.KubernetesGroups = slices.Clone(e.KubernetesGroups)
		c.Policies = slices.Clone(e.Policies)
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].PrincipalARN < out[j].PrincipalARN })
	return out
}

// update runs fn on the state under the lock and saves it; a failed fn or
// save restores the previous state so memory and disk never disagree.
func (s *Store) update(fn func(st *state) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, _ := json.Marshal(&s.st)
	restore := func() {
		var prev state
		_ = json.Unmarshal(old, &prev)
		s.st = prev
	}
	// fn may fail half-way through its changes: undo them all.
	if err := fn(&s.st); err != nil {
		restore()
		return err
	}
	if err := s.saveLocked(); err != nil {
		restore()
		return err
	}
	s.notify()
	return nil
}

// statePath is where a data dir keeps the EKS state.
func StatePath(dataDir string) string { return filepath.Join(dataDir, "eks", "state.json") }

// modeRank orders authentication modes the way EKS lets them change.
func modeRank(m string) int {
	switch m {
	case authn.ModeConfigMap:
		return 1
	case authn.ModeAPIAndConfigMap:
		return 2
	case authn.ModeAPI:
		return 3
	}
	return 0
}
