package unixsock

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func TestListenReplacesStaleSocketWith0660(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "x.sock")
	first, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	// A crashed daemon leaves its socket file behind.
	first.(interface{ SetUnlinkOnClose(bool) }).SetUnlinkOnClose(false)
	first.Close()
	ln, err := Listen(path)
	if err != nil {
		t.Fatalf("listen over a stale socket: %v", err)
	}
	defer ln.Close()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o660 || st.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket mode %v, want 0660 socket", st.Mode())
	}
}

func TestServeGRPCServesThenRemovesTheSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "grpc.sock")
	gs := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	stop, err := ServeGRPC(path, gs, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	r, err := healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{})
	conn.Close()
	if err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health over the socket: %v %v", r, err)
	}
	stop()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("socket left after stop: %v", err)
	}
}
