package main

import (
	"io"
	"net"
	"strconv"
	"unicode/utf8"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/berth-io/berth/internal/podroute"
)

// addResult is what an ADD reports, laid out as the VPC CNI (v1.20+)
// reports it, so that either plugin's DEL reads the other's prevResult: the
// host veth; the pod's interface, whose "mac" carries the route table (not
// the interface's address); the "dummy" pseudo-interface with the VLAN
// (0: not a branch-ENI pod) as its "mac" and the ENI's device number as its
// "sandbox"; the pod's /32 and its default route.
type addResult struct {
	hostVeth, hostMAC string
	ifName, netns     string
	tableIface        string
	table, device     int
	ip                net.IP // 4 bytes
	more              []moreIf
}

// moreIf is one of a multi-NIC pod's interfaces besides the first: in the
// result, its host veth, then the pod's interface (the route table as its
// "mac"), before the dummy; its address names the pod's interface and has
// the interface's own gateway, 169.254.1.(n+1), as the VPC CNI's has.
type moreIf struct {
	hostVeth, hostMAC, ifName string
	table                     int
	ip                        net.IP
}

// interfaces are the result's interfaces as name, mac, sandbox.
func (a *addResult) interfaces() [3][3]string {
	return [3][3]string{{a.hostVeth, a.hostMAC, ""}, {a.ifName, strconv.Itoa(a.table), a.netns},
		{a.tableIface, "0", strconv.Itoa(a.device)}}
}

// cni is the result as the CNI library's type, for the versions print
// converts through the library and for the tests.
func (a *addResult) cni() *current.Result {
	idx := 1
	f := a.interfaces()
	itfs := []*current.Interface{{Name: f[0][0], Mac: f[0][1], Sandbox: f[0][2]}, {Name: f[1][0], Mac: f[1][1], Sandbox: f[1][2]}}
	ips := []*current.IPConfig{{Address: *podroute.HostNet(a.ip), Gateway: podroute.Gateway, Interface: &idx}}
	for i, m := range a.more {
		itfs = append(itfs, &current.Interface{Name: m.hostVeth, Mac: m.hostMAC}, &current.Interface{Name: m.ifName, Mac: strconv.Itoa(m.table), Sandbox: a.netns})
		idx := len(itfs) - 1
		ips = append(ips, &current.IPConfig{Address: *podroute.HostNet(m.ip), Gateway: podroute.GatewayOf(i + 1), Interface: &idx})
	}
	itfs = append(itfs, &current.Interface{Name: f[2][0], Mac: f[2][1], Sandbox: f[2][2]})
	return &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: itfs,
		IPs:        ips,
		Routes:     []*types.Route{{Dst: net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, GW: podroute.Gateway}},
	}
}

// print writes the result for cniVersion to w. For the 1.x versions and a
// pod with one interface it writes the bytes the CNI library's PrintResult
// writes, directly: the
// library marshals the result, unmarshals it into a map (to drop an empty
// "dns"), marshals the map and indents it, and that reflection is, cold,
// a good part of an ADD's own time. TestResultBytesMatchTheLibrary holds
// the two to the same bytes. Older versions convert through the library.
func (a *addResult) print(w io.Writer, cniVersion string) error {
	if cniVersion != "1.0.0" && cniVersion != "1.1.0" || len(a.more) > 0 {
		r, err := a.cni().GetAsVersion(cniVersion)
		if err != nil {
			return err
		}
		return r.PrintTo(w)
	}
	// The library's map round trip sorts every object's keys and omits
	// the empty "mac" and "sandbox".
	b := make([]byte, 0, 640)
	b = append(b, "{\n    \"cniVersion\": "...)
	b = appendJSONString(b, cniVersion)
	b = append(b, ",\n    \"interfaces\": ["...)
	for i, f := range a.interfaces() {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, "\n        {"...)
		sep := "\n"
		if f[1] != "" {
			b = append(b, "\n            \"mac\": "...)
			b = appendJSONString(b, f[1])
			sep = ",\n"
		}
		b = append(b, sep...)
		b = append(b, "            \"name\": "...)
		b = appendJSONString(b, f[0])
		if f[2] != "" {
			b = append(b, ",\n            \"sandbox\": "...)
			b = appendJSONString(b, f[2])
		}
		b = append(b, "\n        }"...)
	}
	b = append(b, "\n    ],\n    \"ips\": [\n        {\n            \"address\": \""...)
	b = append(b, podroute.HostNet(a.ip).String()...)
	gw := podroute.Gateway.String()
	b = append(b, "\",\n            \"gateway\": \""...)
	b = append(b, gw...)
	b = append(b, "\",\n            \"interface\": 1\n        }\n    ],\n    \"routes\": [\n        {\n            \"dst\": \"0.0.0.0/0\",\n            \"gw\": \""...)
	b = append(b, gw...)
	b = append(b, "\"\n        }\n    ]\n}"...)
	_, err := w.Write(b)
	return err
}

// appendJSONString appends s as the library's result has it: encoding/json's
// default escaping (quotes, backslashes and control characters; <, > and &
// as \u00XX; U+2028 and U+2029), with each invalid UTF-8 byte as a literal
// U+FFFD, which is what the library's decode and re-encode leave of the
// first encoding's \ufffd.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = utf8.AppendRune(b, utf8.RuneError)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
