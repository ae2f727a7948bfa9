package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/berth-io/berth/internal/podwire"
	"github.com/berth-io/berth/internal/vethprefix"
)

// Defaults are the Amazon VPC CNI's paths and values.
const (
	defaultIPAMDSocket = "/var/run/aws-node/ipamd.sock"
	defaultNPASocket   = "/var/run/aws-node/npa.sock"
	defaultIPAMState   = "/var/run/aws-node/ipam.json"
	defaultVethPrefix  = "eni"
	defaultMTU         = 9001
)

// NetConf is berth-cni's configuration.
type NetConf struct {
	types.NetConf
	VethPrefix         string `json:"vethPrefix,omitempty"`
	MTU                mtu    `json:"mtu,omitempty"`
	IPAMDSocket        string `json:"ipamdSocket,omitempty"`
	DatapathSocket     string `json:"datapathSocket,omitempty"`
	NPASocket          string `json:"npaSocket,omitempty"`
	IPAMStateFile      string `json:"ipamStateFile,omitempty"`
	PluginLogFile      string `json:"pluginLogFile,omitempty"`
	PluginLogLevel     string `json:"pluginLogLevel,omitempty"`
	PodSGEnforcingMode string `json:"podSGEnforcingMode,omitempty"`

	// Keys the runtime injects.
	RuntimeConfig    json.RawMessage `json:"runtimeConfig,omitempty"`
	Args             json.RawMessage `json:"args,omitempty"`
	ValidAttachments []GCAttachment  `json:"cni.dev/valid-attachments,omitempty"`
	Attachments      []GCAttachment  `json:"cni.dev/attachments,omitempty"`
}

// GCAttachment is one entry of cni.dev/valid-attachments.
type GCAttachment struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifname"`
}

// K8sArgs are the CNI_ARGS kubelet's runtime passes.
type K8sArgs struct {
	types.CommonArgs
	K8S_POD_NAME               types.UnmarshallableString //nolint:revive // wire names
	K8S_POD_NAMESPACE          types.UnmarshallableString //nolint:revive
	K8S_POD_INFRA_CONTAINER_ID types.UnmarshallableString //nolint:revive
	K8S_POD_UID                types.UnmarshallableString //nolint:revive
}

// mtu is the "mtu" key: a number, or a string of digits as the VPC CNI's
// own conflist writes it ("mtu": "9001").
type mtu int

func (m *mtu) UnmarshalJSON(b []byte) error {
	s := string(b)
	if s == "null" {
		return nil
	}
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		s = s[1 : len(s)-1]
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return fmt.Errorf(`"mtu" %s: not an integer`, b)
	}
	*m = mtu(n)
	return nil
}

// loadNetConf decodes and validates the configuration strictly: an unknown
// field, a wrong type or a bad value is an error naming it.
func loadNetConf(b []byte) (*NetConf, string, error) { return decodeNetConf(b, true) }

// loadNetConfForDel is loadNetConf that ignores unknown fields: a DEL
// that cannot succeed leaves the pod stuck terminating, so a config from
// another release must not stop it.
func loadNetConfForDel(b []byte) (*NetConf, string, error) { return decodeNetConf(b, false) }

func decodeNetConf(b []byte, strict bool) (*NetConf, string, error) {
	conf := &NetConf{}
	dec := json.NewDecoder(bytes.NewReader(b))
	if strict {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(conf); err != nil {
		return nil, "", types.NewError(types.ErrDecodingFailure, "invalid berth-cni configuration", err.Error())
	}
	if conf.Name == "" {
		return nil, "", types.NewError(types.ErrInvalidNetworkConfig, "invalid berth-cni configuration", `"name" is required`)
	}
	if conf.VethPrefix == "" {
		conf.VethPrefix = defaultVethPrefix
	}
	if err := vethprefix.Check(conf.VethPrefix); err != nil {
		return nil, "", types.NewError(types.ErrInvalidNetworkConfig, "invalid berth-cni configuration", `"vethPrefix" `+err.Error())
	}
	if conf.MTU == 0 {
		conf.MTU = defaultMTU
	}
	if conf.MTU < 576 || conf.MTU > 9001 {
		return nil, "", types.NewError(types.ErrInvalidNetworkConfig, "invalid berth-cni configuration",
			fmt.Sprintf(`"mtu" %d: must be between 576 and 9001`, conf.MTU))
	}
	if conf.IPAMDSocket == "" {
		conf.IPAMDSocket = defaultIPAMDSocket
	}
	if conf.DatapathSocket == "" {
		conf.DatapathSocket = podwire.DefaultSocket
	}
	if conf.NPASocket == "" {
		conf.NPASocket = defaultNPASocket
	}
	if conf.IPAMStateFile == "" {
		conf.IPAMStateFile = defaultIPAMState
	}
	if err := version.ParsePrevResult(&conf.NetConf); err != nil {
		return nil, "", types.NewError(types.ErrDecodingFailure, "invalid prevResult", err.Error())
	}
	return conf, conf.CNIVersion, nil
}

// Multi-NIC pods: the annotation that asks for an interface on every
// network card, which the runtime passes in runtimeConfig
// ("io.kubernetes.cri.pod-annotations") when the conflist declares that
// capability, as the VPC CNI's does.
const (
	nicConfigAnnotation = "k8s.amazonaws.com/nicConfig"
	multiNICAttachment  = "multi-nic-attachment"
)

// wantsMultiNIC reports whether the pod's annotations in runtimeConfig ask
// for multi-NIC attachment. Only that exact value does, as in the VPC CNI.
func (c *NetConf) wantsMultiNIC() (bool, error) {
	if len(c.RuntimeConfig) == 0 {
		return false, nil
	}
	var rc struct {
		PodAnnotations map[string]string `json:"io.kubernetes.cri.pod-annotations"`
	}
	if err := json.Unmarshal(c.RuntimeConfig, &rc); err != nil {
		return false, types.NewError(types.ErrDecodingFailure, "invalid runtimeConfig", err.Error())
	}
	return rc.PodAnnotations[nicConfigAnnotation] == multiNICAttachment, nil
}

func loadArgs(s string) (*K8sArgs, error) {
	a := &K8sArgs{}
	if err := types.LoadArgs(s, a); err != nil {
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables, "invalid CNI_ARGS", err.Error())
	}
	return a, nil
}

// badNetns reports a netns path the plugin cannot use.
func badNetns(p string) error {
	if p == "" || !strings.HasPrefix(p, "/") {
		return types.NewError(types.ErrInvalidNetNS, "invalid netns path", fmt.Sprintf("%q is not an absolute path", p))
	}
	return nil
}
