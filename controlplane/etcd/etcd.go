// Package etcd runs the embedded etcd member of a one-box control plane and
// saves and restores its snapshots. The member listens on loopback only,
// with TLS and client-certificate authentication, so no other local user
// can read the cluster's secrets through it.
package etcd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	clientsnapshot "go.etcd.io/etcd/client/v3/snapshot"
	utlsnapshot "go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

const memberName = "berth"

// TLS names the files of a TLS identity.
type TLS struct {
	CertFile, KeyFile, CAFile string
}

// Config configures the embedded member.
type Config struct {
	// DataDir holds the member (DataDir/member/{snap,wal}).
	DataDir string
	// ClientAddr and PeerAddr are loopback host:port pairs.
	ClientAddr, PeerAddr string
	// Server is the member's serving identity; clients must present a
	// certificate from Server.CAFile.
	Server TLS
	// StartTimeout bounds the wait for the member to serve (default 60s).
	StartTimeout time.Duration
	// Log receives the member's warnings and errors (default: discarded).
	Log *slog.Logger
}

// Member is a running embedded etcd.
type Member struct {
	etcd     *embed.Etcd
	Endpoint string
	closing  *atomic.Bool
}

// Start starts the member and waits until it serves clients.
func Start(ctx context.Context, cfg Config) (*Member, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("etcd data dir: %w", err)
	}
	ec := embed.NewConfig()
	ec.Name = memberName
	ec.Dir = cfg.DataDir
	client, err := url.Parse("https://" + cfg.ClientAddr)
	if err != nil {
		return nil, fmt.Errorf("etcd client address %q: %w", cfg.ClientAddr, err)
	}
	peer, err := url.Parse("https://" + cfg.PeerAddr)
	if err != nil {
		return nil, fmt.Errorf("etcd peer address %q: %w", cfg.PeerAddr, err)
	}
	ec.ListenClientUrls, ec.AdvertiseClientUrls = []url.URL{*client}, []url.URL{*client}
	ec.ListenPeerUrls, ec.AdvertisePeerUrls = []url.URL{*peer}, []url.URL{*peer}
	ec.InitialCluster = ec.InitialClusterFromName(ec.Name)
	tlsInfo := transport.TLSInfo{CertFile: cfg.Server.CertFile, KeyFile: cfg.Server.KeyFile, TrustedCAFile: cfg.Server.CAFile, ClientCertAuth: true}
	ec.ClientTLSInfo, ec.PeerTLSInfo = tlsInfo, tlsInfo
	ec.LogLevel = "error"
	closing := new(atomic.Bool)
	if cfg.Log != nil {
		ec.LogLevel = "warn"
		ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(newLogger(cfg.Log, zap.WarnLevel, closing.Load))
	}
	// A one-member cluster needs no long snapshot history; a smaller
	// snapshot interval keeps the in-memory raft log, and so RSS, small.
	ec.SnapshotCount = 5000
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("start etcd: %w", err)
	}
	timeout := cfg.StartTimeout
	if timeout == 0 {
		timeout = 60 * time.Second
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("etcd: %w", err)
	case <-time.After(timeout):
		e.Close()
		return nil, fmt.Errorf("etcd did not become ready within %s", timeout)
	case <-ctx.Done():
		e.Close()
		return nil, ctx.Err()
	}
	return &Member{etcd: e, Endpoint: client.String(), closing: closing}, nil
}

// Err reports a fatal error of the running member.
func (m *Member) Err() <-chan error { return m.etcd.Err() }

// Close stops the member.
func (m *Member) Close() {
	m.closing.Store(true)
	m.etcd.Close()
}

// ClientConfig is how a client reaches an etcd cluster.
func ClientConfig(endpoints []string, id TLS) (clientv3.Config, error) {
	tlsInfo := transport.TLSInfo{CertFile: id.CertFile, KeyFile: id.KeyFile, TrustedCAFile: id.CAFile}
	var tc *tls.Config
	if id.CertFile != "" || id.CAFile != "" {
		var err error
		if tc, err = tlsInfo.ClientConfig(); err != nil {
			return clientv3.Config{}, fmt.Errorf("etcd client tls: %w", err)
		}
	}
	return clientv3.Config{Endpoints: endpoints, TLS: tc, DialTimeout: 10 * time.Second, Logger: zap.NewNop()}, nil
}

// SaveSnapshot writes a consistent snapshot of the cluster to path.
func SaveSnapshot(ctx context.Context, cfg clientv3.Config, path string) (string, error) {
	ver, err := clientsnapshot.SaveWithVersion(ctx, zap.NewNop(), cfg, path)
	if err != nil {
		return "", fmt.Errorf("save snapshot %s: %w", path, err)
	}
	return ver, nil
}

// RestoreSnapshot replaces the member in dataDir with one restored from
// snapshot. The control plane must be stopped. The previous member is kept
// beside it as dataDir.bak-<time> so a mistaken restore loses nothing.
func RestoreSnapshot(snapshot, dataDir, peerAddr string) (backup string, err error) {
	if _, err := os.Stat(snapshot); err != nil {
		return "", fmt.Errorf("restore: %w", err)
	}
	tmp := dataDir + ".restore"
	if err := os.RemoveAll(tmp); err != nil {
		return "", fmt.Errorf("restore: %w", err)
	}
	peer := "https://" + peerAddr
	err = utlsnapshot.NewV3(zap.NewNop()).Restore(utlsnapshot.RestoreConfig{
		SnapshotPath:        snapshot,
		Name:                memberName,
		OutputDataDir:       tmp,
		PeerURLs:            []string{peer},
		InitialCluster:      memberName + "=" + peer,
		InitialClusterToken: "etcd-cluster",
	})
	if err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("restore %s: %w", snapshot, err)
	}
	if _, err := os.Stat(dataDir); err == nil {
		backup = fmt.Sprintf("%s.bak-%s", dataDir, time.Now().UTC().Format("20060102T150405Z"))
		if err := os.Rename(dataDir, backup); err != nil {
			return "", fmt.Errorf("restore: keep old member: %w", err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("restore: %w", err)
	}
	if err := os.Rename(tmp, dataDir); err != nil {
		return backup, fmt.Errorf("restore: %w", err)
	}
	if err := os.Chmod(dataDir, 0o700); err != nil {
		return backup, fmt.Errorf("restore: %w", err)
	}
	return backup, nil
}
