package main

import (
	"bytes"
	"fmt"
	"net"
	"strconv"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"
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
	base := addResult{hostVeth: "eni6ccf8ece94d", hostMAC: "4a:d8:3a:50:55:33", ifName: "eth0",
		netns: "/var/run/netns/cni-1234", tableIface: "dummy6ccf8ece94d", table: 3, device: 2, ip: net.IPv4(10, 0, 3, 17).To4()}
	odd := base
	odd.netns, odd.ifName = "/proc/1/ns/net\"<&>\\\n\t\x01\x7f\xff é\u2028\u2029", "e\bt\fh0"
	main := base
	main.table, main.device = 254, 0
	for _, version := range []string{"1.1.0", "1.0.0", "0.4.0", "0.3.1", "0.3.0"} {
		for _, a := range []addResult{base, odd, main} {
			checkResultBytes(t, &a, version)
		}
	}
}

func FuzzResultBytesMatchTheLibrary(f *testing.F) {
	f.Add("eni6ccf8ece94d", "4a:d8:3a:50:55:33", "eth0", "/var/run/netns/x", 3, 2, []byte{10, 0, 0, 1})
	f.Add("a\u2028", "<>&", "\x00\x1f", "\xc3\x28\xe2\x82", -1, 0, []byte{0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, host, mac, ifName, netns string, table, device int, ip []byte) {
		if len(ip) != 4 {
			return
		}
		a := &addResult{hostVeth: host, hostMAC: mac, ifName: ifName, netns: netns,
			tableIface: "dummy" + host, table: table, device: device, ip: net.IP(ip)}
		checkResultBytes(t, a, "1.1.0")
	})
}

// The result reads as the VPC CNI's plugin reads its own prevResult on
// DEL (cmd/routed-eni-cni-plugin: tryDelWithPrevResult and
// teardownPodNetworkWithPrevResult): the dummy's "mac" is the VLAN, 0 for
// a pod that is not on a branch ENI (anything else makes it tear the pod
// down as one and skip ipamd), its "sandbox" the device number, and the
// pod interface's "mac" the route table.
func TestResultReadsAsTheVPCCNIs(t *testing.T) {
	a := addResult{hostVeth: "eni6ccf8ece94d", hostMAC: "4a:d8:3a:50:55:33", ifName: "eth0", netns: "/var/run/netns/x",
		tableIface: "dummy6ccf8ece94d", table: 3, device: 2, ip: net.IPv4(10, 0, 3, 17).To4()}
	var b bytes.Buffer
	if err := a.print(&b, "1.0.0"); err != nil {
		t.Fatal(err)
	}
	r, err := current.NewResult(b.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	res := r.(*current.Result)
	var dummy, eth0 *current.Interface
	for _, itf := range res.Interfaces {
		switch itf.Name {
		case "dummy6ccf8ece94d":
			dummy = itf
		case "eth0":
			eth0 = itf
		}
	}
	if dummy == nil || eth0 == nil {
		t.Fatalf("interfaces %+v", res.Interfaces)
	}
	if vlan, err := strconv.Atoi(dummy.Mac); err != nil || vlan != 0 {
		t.Errorf("dummy mac %q: the VPC CNI reads a VLAN, want 0", dummy.Mac)
	}
	if dev, err := strconv.Atoi(dummy.Sandbox); err != nil || dev != 2 {
		t.Errorf("dummy sandbox %q, want the device number 2", dummy.Sandbox)
	}
	if table, err := strconv.Atoi(eth0.Mac); err != nil || table != 3 {
		t.Errorf("eth0 mac %q, want the route table 3", eth0.Mac)
	}
}

// A multi-NIC pod's result, in the VPC CNI's layout ([host0, eth0, host1,
// mNicIf1, dummy], each address naming its pod interface), reads back as
// the same interfaces in DEL and CHECK, in every version a runtime may
// ask for.
func TestMultiNICResultRoundTrip(t *testing.T) {
	a := addResult{hostVeth: "eni6ccf8ece94d", hostMAC: "4a:d8:3a:50:55:33", ifName: "eth0", netns: "/var/run/netns/x",
		tableIface: "dummy6ccf8ece94d", table: 3, device: 2, ip: net.IPv4(10, 0, 3, 17).To4(),
		more: []moreIf{{hostVeth: "eni0b1e2c3d4e5", hostMAC: "4a:d8:3a:50:55:34", ifName: "mNicIf1", table: 10101, ip: net.IPv4(10, 0, 9, 5).To4()}}}
	for _, v := range []string{"1.1.0", "1.0.0", "0.4.0"} {
		var b bytes.Buffer
		if err := a.print(&b, v); err != nil {
			t.Fatal(err)
		}
		conf, _, err := loadNetConf(fmt.Appendf(nil, `{"cniVersion":%q,"name":"aws-cni","type":"berth-cni","prevResult":%s}`, v, b.String()))
		if err != nil {
			t.Fatal(err)
		}
		st, err := fromPrev(conf)
		if err != nil {
			t.Fatal(err)
		}
		want := prevIf{hostName: "eni0b1e2c3d4e5", podIf: "mNicIf1", ip: net.IPv4(10, 0, 9, 5).To4(), table: 10101}
		if st.hostName != a.hostVeth || !st.ip.Equal(a.ip) || st.table != 3 || len(st.more) != 1 || fmt.Sprint(st.more[0]) != fmt.Sprint(want) {
			t.Errorf("%s: prevResult read as %+v, want eth0 %s on %s table 3 and %+v\n%s", v, st, a.ip, a.hostVeth, want, b.String())
		}
	}
}
