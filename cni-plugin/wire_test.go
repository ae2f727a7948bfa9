package main

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/berth-io/berth/proto/datapath"
	"github.com/berth-io/berth/proto/rpc"
)

// The hand-written client and messages against grpc-go's server and the
// generated protobuf code.

type fakeBackend struct {
	rpc.UnimplementedCNIBackendServer
	rpc.UnimplementedNPBackendServer
	mu     sync.Mutex
	gotDel *rpc.DelNetworkRequest // a copy: grpc-go may reuse the request
}

// lastDel is the last DelNetwork request the server decoded.
func (f *fakeBackend) lastDel() *rpc.DelNetworkRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.gotDel
}

func (f *fakeBackend) DelNetwork(ctx context.Context, r *rpc.DelNetworkRequest) (*rpc.DelNetworkReply, error) {
	f.mu.Lock()
	f.gotDel = proto.Clone(r).(*rpc.DelNetworkRequest)
	f.mu.Unlock()
	switch r.ClientVersion {
	case "old":
		return nil, status.Error(codes.FailedPrecondition, "berth-ipamd does not accept \"old\": 100% sure ✓\nline two")
	case "slow":
		<-ctx.Done()
		return nil, ctx.Err()
	case "big":
		// A reply spanning several DATA frames.
		return &rpc.DelNetworkReply{Success: true, NetworkPolicyMode: strings.Repeat("x", 60000),
			IPAllocationMetadata: []*rpc.IPAllocationMetadata{{IPv4Addr: "10.0.0.9", DeviceNumber: 1, RouteTableId: 2}}}, nil
	}
	return &rpc.DelNetworkReply{Success: true, NetworkPolicyMode: "strict",
		IPAllocationMetadata: []*rpc.IPAllocationMetadata{{IPv4Addr: "10.0.3.4", DeviceNumber: -1, RouteTableId: 254}}}, nil
}

func (f *fakeBackend) EnforceNpToPod(_ context.Context, r *rpc.EnforceNpRequest) (*rpc.EnforceNpReply, error) {
	return &rpc.EnforceNpReply{Success: r.K8S_POD_NAME == "p" && r.NETWORK_POLICY_MODE == "strict" && r.InterfaceCount == 1}, nil
}

func (f *fakeBackend) DeletePodNp(_ context.Context, r *rpc.DeleteNpRequest) (*rpc.DeleteNpReply, error) {
	return &rpc.DeleteNpReply{Success: r.K8S_POD_NAME == "p" && r.K8S_POD_NAMESPACE == "ns"}, nil
}

func serve(t *testing.T) (string, *fakeBackend, *health.Server) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "ipamd.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	f := &fakeBackend{}
	rpc.RegisterCNIBackendServer(s, f)
	rpc.RegisterNPBackendServer(s, f)
	h := health.NewServer()
	healthpb.RegisterHealthServer(s, h)
	go func() { _ = s.Serve(l) }()
	t.Cleanup(s.Stop)
	return sock, f, h
}

// delNetwork is CNIBackend.DelNetwork through the plugin's gRPC client
// (unaryCall), which the plugin itself no longer calls (its DEL goes to the
// datapath socket): a method whose reply can be large and whose errors the
// fake server chooses, for the framing.
func delNetwork(ctx context.Context, socket string, req *rpc.DelNetworkRequest) (*rpc.DelNetworkReply, error) {
	b, err := proto.Marshal(req)
	if err != nil {
		return nil, err
	}
	rb, err := unaryCall(ctx, socket, "/rpc.CNIBackend/DelNetwork", b)
	if err != nil {
		return nil, err
	}
	r := &rpc.DelNetworkReply{}
	return r, proto.Unmarshal(rb, r)
}

func TestWireUnaryCalls(t *testing.T) {
	sock, f, _ := serve(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d, err := delNetwork(ctx, sock, &rpc.DelNetworkRequest{ClientVersion: "v1", K8S_POD_NAME: "pod", K8S_POD_NAMESPACE: "ns", K8S_POD_INFRA_CONTAINER_ID: "infra",
		K8S_POD_UID: "uid", Reason: "PodDeleted", ContainerID: "cid", IfName: "eth0", NetworkName: "net"})
	if err != nil {
		t.Fatal(err)
	}
	gd := f.lastDel()
	if gd.ClientVersion != "v1" || gd.K8S_POD_NAME != "pod" || gd.K8S_POD_NAMESPACE != "ns" || gd.K8S_POD_INFRA_CONTAINER_ID != "infra" ||
		gd.K8S_POD_UID != "uid" || gd.Reason != "PodDeleted" || gd.ContainerID != "cid" || gd.IfName != "eth0" || gd.NetworkName != "net" {
		t.Fatalf("server decoded %v", gd)
	}
	if !d.Success || d.NetworkPolicyMode != "strict" || len(d.IPAllocationMetadata) != 1 ||
		!proto.Equal(d.IPAllocationMetadata[0], &rpc.IPAllocationMetadata{IPv4Addr: "10.0.3.4", DeviceNumber: -1, RouteTableId: 254}) {
		t.Fatalf("reply %+v", d)
	}
	// A reply spanning several DATA frames.
	r, err := delNetwork(ctx, sock, &rpc.DelNetworkRequest{ClientVersion: "big", ContainerID: "c", IfName: "eth0", NetworkName: "n"})
	if err != nil || len(r.IPAllocationMetadata) != 1 || r.IPAllocationMetadata[0].IPv4Addr != "10.0.0.9" || len(r.NetworkPolicyMode) != 60000 {
		t.Fatalf("big reply: %+v %v", r, err)
	}
	ok, err := enforceNpToPod(ctx, sock, "p", "ns", "strict", 1)
	if err != nil || !ok {
		t.Fatalf("EnforceNpToPod: %v %v", ok, err)
	}
	if ok, err = enforceNpToPod(ctx, sock, "p", "ns", "standard", 1); err != nil || ok {
		t.Fatalf("EnforceNpToPod lost the mode: %v %v", ok, err)
	}
	if ok, err = deletePodNp(ctx, sock, "p", "ns"); err != nil || !ok {
		t.Fatalf("DeletePodNp: %v %v", ok, err)
	}
}

func TestWireStatusErrors(t *testing.T) {
	sock, _, h := serve(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := delNetwork(ctx, sock, &rpc.DelNetworkRequest{ClientVersion: "old", ContainerID: "c", IfName: "eth0", NetworkName: "n"})
	want := "rpc error: code = FailedPrecondition desc = berth-ipamd does not accept \"old\": 100% sure ✓\nline two"
	if err == nil || err.Error() != want {
		t.Fatalf("got %v, want %q", err, want)
	}
	if ok, err := healthServing(ctx, sock); err != nil || !ok {
		t.Fatalf("health: %v %v", ok, err)
	}
	h.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	if ok, err := healthServing(ctx, sock); err != nil || ok {
		t.Fatalf("health when not serving: %v %v", ok, err)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel2()
	_, err = delNetwork(short, sock, &rpc.DelNetworkRequest{ClientVersion: "slow", ContainerID: "c", IfName: "eth0", NetworkName: "n"})
	if err == nil || !strings.Contains(err.Error(), "DeadlineExceeded") {
		t.Fatalf("slow call: %v", err)
	}
	_, err = delNetwork(ctx, filepath.Join(t.TempDir(), "none.sock"), &rpc.DelNetworkRequest{})
	if err == nil || !strings.Contains(err.Error(), "Unavailable") {
		t.Fatalf("no server: %v", err)
	}
}

// The connection is a blocking socket: a server that accepts and never
// answers must still end the call at the context's deadline, and a
// cancelled context must end it at once, with grpc-go's codes.
func TestWireSilentServer(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "silent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	short, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = delNetwork(short, sock, &rpc.DelNetworkRequest{ClientVersion: "v1", ContainerID: "c", IfName: "eth0", NetworkName: "n"})
	if err == nil || !strings.Contains(err.Error(), "DeadlineExceeded") || time.Since(start) > 2*time.Second {
		t.Fatalf("silent server, 200 ms deadline: %v after %v", err, time.Since(start))
	}
	long, cancelLong := context.WithTimeout(context.Background(), time.Minute)
	time.AfterFunc(100*time.Millisecond, cancelLong)
	start = time.Now()
	_, err = delNetwork(long, sock, &rpc.DelNetworkRequest{ClientVersion: "v1", ContainerID: "c", IfName: "eth0", NetworkName: "n"})
	if err == nil || !strings.Contains(err.Error(), "Canceled") || time.Since(start) > 2*time.Second {
		t.Fatalf("silent server, cancelled: %v after %v", err, time.Since(start))
	}
}

// The datapath messages, hand-encoded here, against proto/datapath's
// generated code, both ways.
func TestDatapathMessages(t *testing.T) {
	add := datapathAdd{ClientVersion: "v1", ContainerID: "cid", IfName: "eth0", NetworkName: "aws-cni", PodNamespace: "ns",
		PodName: "web-0", PodInfraContainerID: "infra", Netns: "/var/run/netns/x", VethPrefix: "eni", MTU: 9001, PolicyAgent: true, MultiNIC: true}
	del := datapathDel{ClientVersion: "v1", ContainerID: "cid", IfName: "eth0", NetworkName: "aws-cni", PodNamespace: "ns", PodName: "web-0",
		PodInfraContainerID: "infra", PodUID: "uid", NetnsGone: true, Reason: "PodDeleted"}
	check := datapathCheck{ClientVersion: "v1", ContainerID: "cid", IfName: "eth0", NetworkName: "aws-cni", Netns: "/var/run/netns/x",
		IPv4Addr: "10.0.3.4", HostVeth: "eni0123456789a", RouteTableID: 3,
		More: []datapathInterface{{PodIfName: "mNicIf1", IPv4Addr: "10.0.9.4", HostVeth: "enib0123456789", RouteTableID: 10101}, {}}}
	gc := datapathGC{ClientVersion: "v1", NetworkName: "aws-cni", Valid: [][2]string{{"c1", "eth0"}, {"", ""}, {"c2", "eth1"}}}
	for _, tc := range []struct {
		b    []byte
		want *datapath.Request
	}{
		{datapathRequest(commandAdd, add.marshal()), &datapath.Request{Command: &datapath.Request_Add{Add: &datapath.AddRequest{
			ClientVersion: "v1", ContainerId: "cid", IfName: "eth0", NetworkName: "aws-cni", PodNamespace: "ns", PodName: "web-0",
			PodInfraContainerId: "infra", Netns: "/var/run/netns/x", VethPrefix: "eni", Mtu: 9001, PolicyAgent: true,
			RequiresMultiNicAttachment: true}}}},
		{datapathRequest(commandDel, del.marshal()), &datapath.Request{Command: &datapath.Request_Del{Del: &datapath.DelRequest{
			ClientVersion: "v1", ContainerId: "cid", IfName: "eth0", NetworkName: "aws-cni", PodNamespace: "ns", PodName: "web-0",
			PodInfraContainerId: "infra", PodUid: "uid", NetnsGone: true, Reason: "PodDeleted"}}}},
		{datapathRequest(commandCheck, check.marshal()), &datapath.Request{Command: &datapath.Request_Check{Check: &datapath.CheckRequest{
			ClientVersion: "v1", ContainerId: "cid", IfName: "eth0", NetworkName: "aws-cni", Netns: "/var/run/netns/x",
			Ipv4Addr: "10.0.3.4", HostVeth: "eni0123456789a", RouteTableId: 3,
			MoreInterfaces: []*datapath.Interface{{PodIfName: "mNicIf1", Ipv4Addr: "10.0.9.4", HostVeth: "enib0123456789", RouteTableId: 10101}, {}}}}}},
		{datapathRequest(commandGC, gc.marshal()), &datapath.Request{Command: &datapath.Request_Gc{Gc: &datapath.GCRequest{
			ClientVersion: "v1", NetworkName: "aws-cni",
			ValidAttachments: []*datapath.Attachment{{ContainerId: "c1", IfName: "eth0"}, {}, {ContainerId: "c2", IfName: "eth1"}}}}}},
	} {
		got := &datapath.Request{}
		if err := proto.Unmarshal(tc.b, got); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, tc.want) || len(got.ProtoReflect().GetUnknown()) != 0 {
			t.Fatalf("decoded %v, want %v", got, tc.want)
		}
	}

	var cont datapath.Continue
	if err := proto.Unmarshal(datapathContinue("agent down"), &cont); err != nil || cont.Error != "agent down" {
		t.Fatalf("Continue: %v %v", &cont, err)
	}
	cont.Reset()
	if err := proto.Unmarshal(datapathContinue(""), &cont); err != nil || !cont.Applied || cont.Error != "" {
		t.Fatalf("applied Continue: %v %v", &cont, err)
	}

	for _, r := range []*datapath.Reply{
		{Phase: "done", Ipv4Addr: "10.0.3.4", DeviceNumber: 2, RouteTableId: 3, HostVeth: "eni0123456789a",
			HostMac: "02:00:00:00:00:01", PodMac: "02:00:00:00:00:02", NetworkPolicyMode: "standard",
			MoreInterfaces: []*datapath.Interface{{PodIfName: "mNicIf1", Ipv4Addr: "10.0.9.4", DeviceNumber: 0, RouteTableId: 10100,
				HostVeth: "enib0123456789", HostMac: "02:00:00:00:01:01", PodMac: "02:00:00:00:01:02"}, {PodIfName: "mNicIf2", DeviceNumber: 3}}},
		{Error: &datapath.Error{Code: 11, Msg: "failed to assign an IP address to the pod", Details: "subnet exhausted"}},
		{Phase: "links", DeviceNumber: -1, NetworkPolicyMode: "strict"},
	} {
		b, err := proto.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		d, err := unmarshalDatapathReply(b)
		if err != nil {
			t.Fatal(err)
		}
		back := &datapath.Reply{Phase: d.Phase, Ipv4Addr: d.IPv4Addr, DeviceNumber: d.DeviceNumber, RouteTableId: d.RouteTableID,
			HostVeth: d.HostVeth, HostMac: d.HostMAC, PodMac: d.PodMAC, NetworkPolicyMode: d.NetworkPolicyMode}
		for _, f := range d.More {
			back.MoreInterfaces = append(back.MoreInterfaces, &datapath.Interface{PodIfName: f.PodIfName, Ipv4Addr: f.IPv4Addr, DeviceNumber: f.DeviceNumber,
				RouteTableId: f.RouteTableID, HostVeth: f.HostVeth, HostMac: f.HostMAC, PodMac: f.PodMAC})
		}
		if d.Error != nil {
			back.Error = &datapath.Error{Code: d.Error.Code, Msg: d.Error.Msg, Details: d.Error.Details}
		}
		if !proto.Equal(back, r) {
			t.Fatalf("hand decoding gave %v, want %v", back, r)
		}
	}
	if _, err := unmarshalDatapathReply([]byte{0x0a, 0x05, 'd'}); err == nil {
		t.Fatal("a truncated reply decoded")
	}
}
