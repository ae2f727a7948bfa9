package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// HostAddress is the host's first global IPv4 address, which instances
// reach through their VPC router.
func HostAddress(t testing.TB) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && n.IP.IsGlobalUnicast() {
			return n.IP.String()
		}
	}
	Require(t, false, "no global IPv4 address on the host for instances to reach")
	return ""
}

// Forward relays TCP connections from ip:<free port> to target until the
// test ends, and returns the listening address.
func Forward(t testing.TB, ip, target string) string {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer in.Close()
				out, err := net.DialTimeout("tcp", target, 5*time.Second)
				if err != nil {
					return
				}
				defer out.Close()
				go func() { _, _ = io.Copy(out, in); out.(*net.TCPConn).CloseWrite() }()
				_, _ = io.Copy(in, out)
			}()
		}
	}()
	return ln.Addr().String()
}

// ProcessesUnder lists processes whose command line mentions dir: what a
// test's daemons left running under its directory.
func ProcessesUnder(dir string) []string {
	var out []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(b, []byte(dir)) {
			out = append(out, e.Name()+": "+string(bytes.ReplaceAll(b, []byte{0}, []byte{' '})))
		}
	}
	return out
}

// LockCIDR holds a 10.x.0.0/16 (x in 128–191) that no other test on this
// machine uses and the host does not route, until the test ends; for a
// VPC that something else than the test creates (see OwnSubnet).
func LockCIDR(t testing.TB) string {
	t.Helper()
	return fmt.Sprintf("10.%d.0.0/16", lockCIDR(t))
}

// WithoutAWS drops the AWS_ settings from an environment: a test's
// processes get only the AWS settings it gives them.
func WithoutAWS(env []string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, "AWS_") {
			out = append(out, kv)
		}
	}
	return out
}
