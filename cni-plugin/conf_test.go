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
		{"wrong type", `{"cniVersion":"1.1.0","name":"n","type":"berth-cni","mtu":true}`, types.ErrDecodingFailure},
		{"mtu not a number", `{"cniVersion":"1.1.0","name":"n","type":"berth-cni","mtu":"9001x"}`, types.ErrDecodingFailure},
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

// The VPC CNI's conflist writes "mtu" as a string.
func TestMTUAsString(t *testing.T) {
	conf, _, err := loadNetConf([]byte(`{"cniVersion":"1.1.0","name":"aws-cni","type":"berth-cni","mtu":"1500"}`))
	if err != nil || conf.MTU != 1500 {
		t.Fatalf("mtu \"1500\": %v %+v", err, conf)
	}
}

// DEL must not fail on a field it does not know (a conflist of another
// release): the pod would stay terminating. ADD still refuses it.
func TestDelIgnoresUnknownFields(t *testing.T) {
	b := []byte(`{"cniVersion":"1.1.0","name":"aws-cni","type":"berth-cni","newKnob":1}`)
	if conf, _, err := loadNetConfForDel(b); err != nil || conf.Name != "aws-cni" {
		t.Fatalf("DEL: %v", err)
	}
	if _, _, err := loadNetConf(b); err == nil {
		t.Fatal("ADD accepted an unknown field")
	}
}

// The multi-NIC annotation comes in runtimeConfig, among the pod's others;
// only its exact value asks for it, as in the VPC CNI.
func TestWantsMultiNIC(t *testing.T) {
	for _, tc := range []struct {
		runtimeConfig string
		want          bool
		code          uint // a CNI error
	}{
		{``, false, 0},
		{`{"portMappings":[]}`, false, 0},
		{`{"io.kubernetes.cri.pod-annotations":{"k8s.amazonaws.com/nicConfig":"multi-nic-attachment","other":"x"}}`, true, 0},
		{`{"io.kubernetes.cri.pod-annotations":{"k8s.amazonaws.com/nicConfig":"Multi-NIC-attachment"}}`, false, 0},
		{`{"io.kubernetes.cri.pod-annotations":{"other":"multi-nic-attachment"}}`, false, 0},
		{`{"io.kubernetes.cri.pod-annotations":["k8s.amazonaws.com/nicConfig"]}`, false, types.ErrDecodingFailure},
	} {
		conf := `{"cniVersion":"1.1.0","name":"aws-cni","type":"berth-cni"`
		if tc.runtimeConfig != "" {
			conf += `,"runtimeConfig":` + tc.runtimeConfig
		}
		c, _, err := loadNetConf([]byte(conf + "}"))
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.wantsMultiNIC()
		var e *types.Error
		if tc.code != 0 {
			if !errors.As(err, &e) || e.Code != tc.code {
				t.Errorf("%s: %v, want CNI error %d", tc.runtimeConfig, err, tc.code)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: %v %v, want %v", tc.runtimeConfig, got, err, tc.want)
		}
	}
}
