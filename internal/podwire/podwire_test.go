package podwire

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// listen accepts connections on a new socket and never answers, or, with
// big, sends each a message larger than MaxMessage.
func listen(t *testing.T, big bool) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "dp.sock")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.AcceptUnix()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			if big {
				_, _ = c.Write([]byte(strings.Repeat("1", MaxMessage+1)))
			}
		}
	}()
	return sock
}

func TestSilentServerEndsAtTheDeadlineOrCancel(t *testing.T) {
	sock := listen(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	c, err := Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Send([]byte("request")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := c.Recv(); err == nil || time.Since(start) > 2*time.Second {
		t.Fatalf("silent server, 200 ms deadline: %v after %v", err, time.Since(start))
	}

	long, cancelLong := context.WithTimeout(context.Background(), time.Minute)
	c2, err := Dial(long, sock)
	if err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(100*time.Millisecond, cancelLong)
	start = time.Now()
	if _, err := c2.Recv(); err == nil || time.Since(start) > 2*time.Second {
		t.Fatalf("silent server, cancelled: %v after %v", err, time.Since(start))
	}
	c2.Close()
	c2.Close() // idempotent
}

func TestOversizedReplyAndNoServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, listen(t, true))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Recv(); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("oversized reply: %v", err)
	}
	if _, err := Dial(ctx, filepath.Join(t.TempDir(), "none.sock")); err == nil || !strings.Contains(err.Error(), "none.sock") {
		t.Fatalf("no server: %v", err)
	}
	expired, cancel2 := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel2()
	time.Sleep(time.Millisecond)
	if _, err := Dial(expired, "/nonexistent"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("expired context: %v", err)
	}
}
