package server

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/berth-io/berth/internal/sigv4"
)

// newEC2DNS resolves instance IDs to private DNS names for
// {{EC2PrivateDNSName}}, caching them: an instance keeps its name.
func newEC2DNS(c *ec2.Client) func(ctx context.Context, id string) (string, error) {
	var mu sync.Mutex
	names := map[string]string{}
	return func(ctx context.Context, id string) (string, error) {
		mu.Lock()
		n, ok := names[id]
		mu.Unlock()
		if ok {
			return n, nil
		}
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		out, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
		if err != nil {
			return "", fmt.Errorf("describe instance %s: %w", id, err)
		}
		for _, r := range out.Reservations {
			for _, i := range r.Instances {
				if i.PrivateDnsName != nil && *i.PrivateDnsName != "" {
					mu.Lock()
					names[id] = *i.PrivateDnsName
					mu.Unlock()
					return *i.PrivateDnsName, nil
				}
			}
		}
		return "", fmt.Errorf("instance %s has no private DNS name", id)
	}
}

// keyStore verifies EKS API signatures against the keys of an AWS
// shared-credentials file (localcloud writes one) and the environment's
// static keys. The file is re-read when it changes.
type keyStore struct {
	log     *slog.Logger
	account string
	path    string

	mu    sync.Mutex
	mtime time.Time
	keys  map[string]sigv4.Credentials
}

func newKeyStore(log *slog.Logger, account, path string) *keyStore {
	if path == "" {
		path = os.Getenv("AWS_SHARED_CREDENTIALS_FILE")
	}
	if path == "" {
		if home, err := os.UserHomeDir(); err == nil {
			path = filepath.Join(home, ".aws", "credentials")
		}
	}
	return &keyStore{log: log, account: account, path: path}
}

func (k *keyStore) Lookup(id string) (sigv4.Credentials, bool) {
	if id != "" && id == os.Getenv("AWS_ACCESS_KEY_ID") {
		return sigv4.Credentials{AccessKeyID: id, SecretAccessKey: os.Getenv("AWS_SECRET_ACCESS_KEY"), SessionToken: os.Getenv("AWS_SESSION_TOKEN"), Account: k.account}, true
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if st, err := os.Stat(k.path); err == nil && !st.ModTime().Equal(k.mtime) {
		keys, err := readCredentials(k.path, k.account)
		if err != nil {
			k.log.Warn("eks api credentials file", "path", k.path, "err", err)
		} else {
			k.keys, k.mtime = keys, st.ModTime()
		}
	}
	c, ok := k.keys[id]
	return c, ok
}

// readCredentials parses the INI-style AWS shared-credentials file.
func readCredentials(path, account string) (map[string]sigv4.Credentials, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]sigv4.Credentials{}
	var cur sigv4.Credentials
	flush := func() {
		if cur.AccessKeyID != "" && cur.SecretAccessKey != "" {
			cur.Account = account
			out[cur.AccessKeyID] = cur
		}
		cur = sigv4.Credentials{}
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";") {
			continue
		}
		if strings.HasPrefix(line, "[") {
			flush()
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "aws_access_key_id":
			cur.AccessKeyID = strings.TrimSpace(v)
		case "aws_secret_access_key":
			cur.SecretAccessKey = strings.TrimSpace(v)
		case "aws_session_token":
			cur.SessionToken = strings.TrimSpace(v)
		}
	}
	flush()
	return out, sc.Err()
}
