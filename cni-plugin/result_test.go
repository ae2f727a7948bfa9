package main

import (
	"bytes"
	"net"
	"testing"
)

// The hand-written 1.x result must be the CNI library's, byte for byte.
func checkResultBytes(t *testing.T, a *addResult, version string) {
	t.Helper()
	want := &bytes.Buffer{}
	lib, err := a.cni().GetAsVersion(version)
	if err != nil {
		t.Fatal(err)
	}
	if err := lib.PrintTo(want); err != nil {
		t.Fatal(err)
	}
	got := &bytes.Buffer{}
	if err := a.print(got, version); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Fatalf("cniVersion %s:\n got %q\nwant %q", version, got, want)
	}
}

func TestResultBytesMatchTheLibrary(t *testing.T) {
	base := addResult{hostVeth: "eni6ccf8ece94d", hostMAC: "4a:d8:3a:50:55:33", ifName: "eth0", podMAC: "1e:35:d4:0a:86:63",
		netns: "/var/run/netns/cni-1234", tableIface: "dummy6ccf8ece94d", table: 3, device: 2, ip: net.IPv4(10, 0, 3, 17).To4()}
	odd := base
	odd.netns, odd.ifName, odd.podMAC = "/proc/1/ns/net\"<&>\\\n\t\x01\x7f\xff é\u2028\u2029", "e\bt\fh0", ""
	main := base
	main.table, main.device = 254, 0
	for _, version := range []string{"1.1.0", "1.0.0", "0.4.0", "0.3.1", "0.3.0"} {
		for _, a := range []addResult{base, odd, main} {
			checkResultBytes(t, &a, version)
		}
	}
}

func FuzzResultBytesMatchTheLibrary(f *testing.F) {
	f.Add("eni6ccf8ece94d", "4a:d8:3a:50:55:33", "eth0", "", "/var/run/netns/x", 3, 2, []byte{10, 0, 0, 1})
	f.Add("a\u2028", "<>&", "\x00\x1f", "\"\\", "\xc3\x28\xe2\x82", -1, 0, []byte{0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, host, mac, ifName, podMAC, netns string, table, device int, ip []byte) {
		if len(ip) != 4 {
			return
		}
		a := &addResult{hostVeth: host, hostMAC: mac, ifName: ifName, podMAC: podMAC, netns: netns,
			tableIface: "dummy" + host, table: table, device: device, ip: net.IP(ip)}
		checkResultBytes(t, a, "1.1.0")
	})
}
