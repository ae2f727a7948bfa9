package csiserver

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

func TestParseMode(t *testing.T) {
	for _, tc := range []struct {
		in         string
		ctrl, node bool
		wantErr    bool
	}{
		{"controller", true, false, false},
		{"node", false, true, false},
		{"all", true, true, false},
		{"both", false, false, true},
		{"", false, false, true},
	} {
		m, err := ParseMode(tc.in)
		if (err != nil) != tc.wantErr {
			t.Errorf("ParseMode(%q) error %v, want error %t", tc.in, err, tc.wantErr)
			continue
		}
		if m.Controller() != tc.ctrl || m.Node() != tc.node {
			t.Errorf("ParseMode(%q) = %q: controller %t node %t", tc.in, m, m.Controller(), m.Node())
		}
	}
}

func TestInflight(t *testing.T) {
	f := NewInflight()
	release, err := f.Acquire("vol-1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Acquire("vol-1"); status.Code(err) != codes.Aborted {
		t.Fatalf("duplicate: %v, want Aborted", err)
	}
	if r, err := f.Acquire("vol-2"); err != nil {
		t.Fatal(err)
	} else {
		r()
	}
	release()
	if _, err := f.Acquire("vol-1"); err != nil {
		t.Fatalf("after release: %v", err)
	}
}

func TestListenServe(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "sub", "csi.sock")
	// A stale socket from a crashed run must not stop the next one.
	if err := os.MkdirAll(filepath.Dir(sock), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(sock+".tmp", nil, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ln, err := Listen(ctx, "unix://"+sock)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o660 {
		t.Errorf("socket mode %v, want 0660", fi.Mode().Perm())
	}
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, ln, slog.New(slog.NewTextHandler(io.Discard, nil)), func(s *grpc.Server) {
			healthpb.RegisterHealthServer(s, health.NewServer())
		})
	}()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("health check over the socket: %v", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
}

func TestListenBadEndpoint(t *testing.T) {
	for _, ep := range []string{"http://x", "::bad"} {
		if _, err := Listen(context.Background(), ep); err == nil {
			t.Errorf("Listen(%q): no error", ep)
		}
	}
}
