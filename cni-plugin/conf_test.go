package main

import (
	"errors"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

func TestLoadNetConf(t *testing.T) {
	conf, v, err := loadNetConf([]byte(`{"cniVersion":"1.1.0","name":"aws-cni","type":"berth-cni","mtu":1500}`))
	if err != nil {
		t.Fatal(err)
	}
	if v != "1.1.0" || conf.VethPrefix != "eni" || conf.MTU != 1500 || conf.IPAMDSocket != defaultIPAMDSocket || conf.NPASocket != defaultNPASocket {
		t.Fatalf("%+v", conf)
	}
}

func TestBadConfigs(t *testing.T) {
	for _, tc := range []struct {
		name, conf string
		code       uint
	}{
		{"unknown field", `{"cniVersion":"1.1.0","name":"n","type":"berth-cni","vethPrefx":"eni"}`, types.ErrDecodingFailure},
		{"wrong type", `{"cniVersion":"1.1.0","name":"n","type":"berth-cni","mtu":"9001"}`, types.ErrDecodingFailure},
		{"missing name", `{"cniVersion":"1.1.0","type":"berth-cni"}`, types.ErrInvalidNetworkConfig},
		{"bad mtu", `{"cniVersion":"1.1.0","name":"n","type":"berth-cni","mtu":99999}`, types.ErrInvalidNetworkConfig},
		{"reserved prefix", `{"cniVersion":"1.1.0","name":"n","type":"berth-cni","vethPrefix":"eth"}`, types.ErrInvalidNetworkConfig},
		{"long prefix", `{"cniVersion":"1.1.0","name":"n","type":"berth-cni","vethPrefix":"abcde"}`, types.ErrInvalidNetworkConfig},
		{"not json", `{`, types.ErrDecodingFailure},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := loadNetConf([]byte(tc.conf))
			var e *types.Error
			if !errors.As(err, &e) || e.Code != tc.code {
				t.Fatalf("got %v, want CNI error code %d", err, tc.code)
			}
		})
	}
	if err := badNetns("relative/path"); err == nil {
		t.Fatal("relative netns path accepted")
	}
}

func TestHostVethName(t *testing.T) {
	// sha1("default.web-0") starts with 7c0e5f8b8a1...; the name is the
	// prefix plus 11 hex digits, at most 15 bytes.
	n := hostVethName("eni", "default", "web-0")
	if len(n) != 14 || n[:3] != "eni" {
		t.Fatalf("veth name %q", n)
	}
	if hostVethName("eni", "default", "web-0") != n || hostVethName("eni", "default", "web-1") == n {
		t.Fatal("veth names are not a function of namespace and pod")
	}
}

func FuzzLoadNetConf(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.1.0","name":"aws-cni","type":"berth-cni"}`))
	f.Add([]byte(`{"cniVersion":"0.4.0","name":"x","prevResult":{"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.0.0.1/32"}]}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		conf, _, err := loadNetConf(b)
		if err == nil && (conf.Name == "" || conf.MTU < 576 || conf.MTU > 9001) {
			t.Fatalf("accepted an invalid config: %+v", conf)
		}
	})
}
