package rpc

import (
	"bytes"
	"encoding/hex"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// field is one expected wire field. The numbers below are copied from the
// Amazon VPC CNI v1.23 rpc.proto; they are the compatibility contract, so the
// expectation is built with protowire, independently of the generated code.
type field struct {
	num protowire.Number
	val any // string, bool, int32 or []byte (embedded message)
}

func wire(fields ...field) []byte {
	var b []byte
	for _, f := range fields {
		switch v := f.val.(type) {
		case string:
			b = protowire.AppendTag(b, f.num, protowire.BytesType)
			b = protowire.AppendString(b, v)
		case []byte:
			b = protowire.AppendTag(b, f.num, protowire.BytesType)
			b = protowire.AppendBytes(b, v)
		case bool:
			b = protowire.AppendTag(b, f.num, protowire.VarintType)
			b = protowire.AppendVarint(b, protowire.EncodeBool(v))
		case int32:
			b = protowire.AppendTag(b, f.num, protowire.VarintType)
			b = protowire.AppendVarint(b, uint64(v))
		default:
			panic("unsupported field type")
		}
	}
	return b
}

func TestWireCompatibility(t *testing.T) {
	ipMeta := wire(field{1, "10.0.1.17"}, field{2, "2600::1"}, field{3, int32(2)}, field{4, int32(3)})
	cases := []struct {
		name string
		msg  proto.Message
		want []byte
	}{
		{"AddNetworkRequest", &AddNetworkRequest{
			K8S_POD_NAME: "web-0", K8S_POD_NAMESPACE: "default", K8S_POD_INFRA_CONTAINER_ID: "infra",
			Netns: "/var/run/netns/x", IfName: "eth0", NetworkName: "aws-cni", ContainerID: "cid",
			ClientVersion: "v1.23.0", RequiresMultiNICAttachment: true,
		}, wire(field{1, "web-0"}, field{2, "default"}, field{3, "infra"}, field{4, "/var/run/netns/x"},
			field{5, "eth0"}, field{6, "aws-cni"}, field{7, "cid"}, field{8, "v1.23.0"}, field{9, true})},
		{"IPAllocationMetadata", &IPAllocationMetadata{IPv4Addr: "10.0.1.17", IPv6Addr: "2600::1", DeviceNumber: 2, RouteTableId: 3}, ipMeta},
		{"AddNetworkReply", &AddNetworkReply{
			Success: true, IPAllocationMetadata: []*IPAllocationMetadata{{IPv4Addr: "10.0.1.17", IPv6Addr: "2600::1", DeviceNumber: 2, RouteTableId: 3}},
			UseExternalSNAT: true, VPCv4CIDRs: []string{"10.0.0.0/16"}, PodVlanId: 7, PodENIMAC: "02:00:00:00:00:01",
			PodENISubnetGW: "10.0.0.1", ParentIfIndex: 4, VPCv6CIDRs: []string{"2600::/56"}, NetworkPolicyMode: "standard",
		}, wire(field{1, true}, field{2, ipMeta}, field{5, true}, field{6, "10.0.0.0/16"}, field{7, int32(7)},
			field{8, "02:00:00:00:00:01"}, field{9, "10.0.0.1"}, field{10, int32(4)}, field{12, "2600::/56"}, field{13, "standard"})},
		{"DelNetworkRequest", &DelNetworkRequest{
			K8S_POD_NAME: "web-0", K8S_POD_NAMESPACE: "default", K8S_POD_INFRA_CONTAINER_ID: "infra", Reason: "PodDeleted",
			IfName: "eth0", NetworkName: "aws-cni", ContainerID: "cid", ClientVersion: "v1.23.0", K8S_POD_UID: "uid-1",
		}, wire(field{1, "web-0"}, field{2, "default"}, field{3, "infra"}, field{5, "PodDeleted"}, field{6, "eth0"},
			field{7, "aws-cni"}, field{8, "cid"}, field{9, "v1.23.0"}, field{10, "uid-1"})},
		{"DelNetworkReply", &DelNetworkReply{
			Success: true, IPAllocationMetadata: []*IPAllocationMetadata{{IPv4Addr: "10.0.1.17", IPv6Addr: "2600::1", DeviceNumber: 2, RouteTableId: 3}},
			PodVlanId: 4, NetworkPolicyMode: "strict",
		}, wire(field{1, true}, field{2, ipMeta}, field{4, int32(4)}, field{6, "strict"})},
		{"EnforceNpRequest", &EnforceNpRequest{K8S_POD_NAME: "p", K8S_POD_NAMESPACE: "ns", NETWORK_POLICY_MODE: "standard", InterfaceCount: 2},
			wire(field{1, "p"}, field{2, "ns"}, field{3, "standard"}, field{4, int32(2)})},
		{"EnforceNpReply", &EnforceNpReply{Success: true}, wire(field{1, true})},
		{"DeleteNpRequest", &DeleteNpRequest{K8S_POD_NAME: "p", K8S_POD_NAMESPACE: "ns"}, wire(field{1, "p"}, field{2, "ns"})},
		{"DeleteNpReply", &DeleteNpReply{Success: true}, wire(field{1, true})},
		{"NetworkPolicyAgentConfigReply", &NetworkPolicyAgentConfigReply{
			NetworkPolicyMode: "standard", MultiNICEnabled: true, NodeIPv4: "10.0.0.5", NodeIPv6: "2600::5", InstanceID: "i-0abc", Region: "us-west-2",
		}, wire(field{1, "standard"}, field{2, true}, field{3, "10.0.0.5"}, field{4, "2600::5"}, field{5, "i-0abc"}, field{6, "us-west-2"})},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := proto.MarshalOptions{Deterministic: true}.Marshal(tc.msg)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tc.want) {
				t.Fatalf("wire bytes differ from the VPC CNI contract\n got %s\nwant %s", hex.EncodeToString(got), hex.EncodeToString(tc.want))
			}
			// And the other direction: bytes from an upstream peer decode into the same message.
			back := tc.msg.ProtoReflect().New().Interface()
			if err := proto.Unmarshal(tc.want, back); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(back, tc.msg) {
				t.Fatalf("decoded %v, want %v", back, tc.msg)
			}
		})
	}
}

func TestServiceNames(t *testing.T) {
	// Method paths are part of the wire contract too.
	for got, want := range map[string]string{
		CNIBackend_AddNetwork_FullMethodName:                       "/rpc.CNIBackend/AddNetwork",
		CNIBackend_DelNetwork_FullMethodName:                       "/rpc.CNIBackend/DelNetwork",
		NPBackend_EnforceNpToPod_FullMethodName:                    "/rpc.NPBackend/EnforceNpToPod",
		NPBackend_DeletePodNp_FullMethodName:                       "/rpc.NPBackend/DeletePodNp",
		ConfigServerBackend_GetNetworkPolicyConfigs_FullMethodName: "/rpc.ConfigServerBackend/GetNetworkPolicyConfigs",
	} {
		if got != want {
			t.Errorf("method %q, want %q", got, want)
		}
	}
}
