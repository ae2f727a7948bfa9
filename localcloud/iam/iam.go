// Package iam is localcloud's identity store: the account, its root access
// keys, roles (any role ARN in the account can be assumed; roles come into
// being when first used, since localcloud has no IAM API) and the temporary
// credentials STS and IMDS hand out.
package iam

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/base64"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/berth-io/berth/internal/atomicfile"
	"github.com/berth-io/berth/localcloud/store"
)

// DefaultNodeRole is the role of instances launched without a profile.
const DefaultNodeRole = "berth-node-role"

// Key is one access key pair.
type Key struct {
	AccessKeyID     string    `json:"accessKeyId"`
	SecretAccessKey string    `json:"secretAccessKey"`
	SessionToken    string    `json:"sessionToken,omitempty"`
	Expiration      time.Time `json:"expiration,omitempty"`
	// Principal: the root ("arn:aws:iam::<acct>:root") or an assumed role
	// session ("arn:aws:sts::<acct>:assumed-role/<role>/<session>").
	ARN    string `json:"arn"`
	UserID string `json:"userId"`
}

// Identity is who signed a request.
type Identity struct {
	Account string
	ARN     string
	UserID  string
}

type state struct {
	Account string            `json:"account"`
	Root    Key               `json:"root"`
	Temp    map[string]*Key   `json:"temp"`
	RoleIDs map[string]string `json:"roleIds"` // role name -> AROA... id
}

// Store holds the identities of one account.
type Store struct {
	mu   sync.Mutex
	path string
	st   state
	now  func() time.Time
}

// Open loads or creates the identity store in dir. On first start it mints
// root keys and writes dir/credentials and dir/config for the aws CLI and
// the SDKs.
func Open(dir, account, region string, now func() time.Time) (*Store, error) {
	if now == nil {
		now = time.Now
	}
	s := &Store{path: filepath.Join(dir, "iam.json"), now: now}
	found, err := store.Load(s.path, &s.st)
	if err != nil {
		return nil, err
	}
	if !found {
		s.st = state{Account: account, Root: Key{
			AccessKeyID:     "AKIA" + randomID(16),
			SecretAccessKey: randomSecret(),
			ARN:             "arn:aws:iam::" + account + ":root",
			UserID:          account,
		}}
	}
	if s.st.Temp == nil {
		s.st.Temp = map[string]*Key{}
	}
	if s.st.RoleIDs == nil {
		s.st.RoleIDs = map[string]string{}
	}
	if err := store.Save(s.path, &s.st, 0o600); err != nil {
		return nil, err
	}
	creds := fmt.Sprintf("[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n", s.st.Root.AccessKeyID, s.st.Root.SecretAccessKey)
	if err := atomicfile.WriteFile(filepath.Join(dir, "credentials"), []byte(creds), 0o600); err != nil {
		return nil, err
	}
	conf := fmt.Sprintf("[default]\nregion = %s\noutput = json\n", region)
	if err := atomicfile.WriteFile(filepath.Join(dir, "config"), []byte(conf), 0o644); err != nil {
		return nil, err
	}
	return s, nil
}

// Account is the account ID.
func (s *Store) Account() string { return s.st.Account }

// Root returns the root key.
func (s *Store) Root() Key {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.Root
}

// Lookup finds a key by access key ID. Expired temporary keys are returned
// (with their Expiration) so the caller can answer ExpiredToken rather than
// pretend the key never existed.
func (s *Store) Lookup(accessKeyID string) (Key, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if accessKeyID == s.st.Root.AccessKeyID {
		return s.st.Root, true
	}
	k, ok := s.st.Temp[accessKeyID]
	if !ok {
		return Key{}, false
	}
	return *k, true
}

// RoleARN is the ARN of a role name in this account.
func (s *Store) RoleARN(name string) string {
	return "arn:aws:iam::" + s.st.Account + ":role/" + name
}

// ParseRoleARN returns the role name of a role ARN in this account.
func (s *Store) ParseRoleARN(arn string) (string, error) {
	prefix := "arn:aws:iam::" + s.st.Account + ":role/"
	name, ok := strings.CutPrefix(arn, prefix)
	if !ok || name == "" {
		return "", fmt.Errorf("%q is not a role ARN of account %s", arn, s.st.Account)
	}
	// Roles may have paths (role/path/name); the name is the last element.
	if i := strings.LastIndex(name, "/"); i >= 0 {
		name = name[i+1:]
	}
	return name, nil
}

// Issue mints temporary credentials for a session of role.
func (s *Store) Issue(role, session string, d time.Duration) (Key, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id, ok := s.st.RoleIDs[role]
	if !ok {
		id = "AROA" + randomID(17)
		s.st.RoleIDs[role] = id
	}
	now := s.now()
	k := &Key{
		AccessKeyID:     "ASIA" + randomID(16),
		SecretAccessKey: randomSecret(),
		SessionToken:    randomToken(),
		Expiration:      now.Add(d).UTC().Truncate(time.Second),
		ARN:             "arn:aws:sts::" + s.st.Account + ":assumed-role/" + role + "/" + session,
		UserID:          id + ":" + session,
	}
	// Drop long-expired sessions so the file does not grow without bound.
	for kid, old := range s.st.Temp {
		if now.Sub(old.Expiration) > time.Hour {
			delete(s.st.Temp, kid)
		}
	}
	s.st.Temp[k.AccessKeyID] = k
	if err := store.Save(s.path, &s.st, 0o600); err != nil {
		delete(s.st.Temp, k.AccessKeyID)
		return Key{}, err
	}
	return *k, nil
}

// AssumedRoleID is the AROA id of a role, minted on first use.
func (s *Store) AssumedRoleID(role string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.RoleIDs[role]
}

func randomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return strings.ToUpper(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b))[:n]
}

func randomSecret() string {
	b := make([]byte, 30)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)[:40]
}

func randomToken() string {
	b := make([]byte, 240)
	_, _ = rand.Read(b)
	return "IQoJb3JpZ2luX2VjE" + base64.StdEncoding.EncodeToString(b)
}
