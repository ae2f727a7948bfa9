package main

// The protobuf messages of proto/rpc.proto and proto/datapath.proto the
// plugin sends and reads, encoded by hand (proto3: zero values are not sent,
// unknown fields are skipped). cni-plugin/wire_test.go checks them against
// the generated code.

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
)

// The commands of datapath.Request (its oneof's field numbers).
const (
	commandAdd   = 1
	commandDel   = 2
	commandCheck = 3
	commandGC    = 4
)

// datapathRequest is datapath.Request carrying one command.
func datapathRequest(command int, m []byte) []byte { return pbBytes(nil, command, m) }

// datapathAdd is datapath.AddRequest.
type datapathAdd struct {
	ClientVersion, ContainerID, IfName, NetworkName, PodNamespace, PodName string
	PodInfraContainerID, Netns, VethPrefix                                 string
	MTU                                                                    int32
	PolicyAgent, MultiNIC                                                  bool
}

func (m *datapathAdd) marshal() []byte {
	b := pbStrings(nil, m.ClientVersion, m.ContainerID, m.IfName, m.NetworkName, m.PodNamespace, m.PodName,
		m.PodInfraContainerID, m.Netns, m.VethPrefix)
	b = pbInt32(b, 10, m.MTU)
	b = pbBool(b, 11, m.PolicyAgent)
	return pbBool(b, 12, m.MultiNIC)
}

// datapathDel is datapath.DelRequest.
type datapathDel struct {
	ClientVersion, ContainerID, IfName, NetworkName, PodNamespace, PodName string
	PodInfraContainerID, PodUID                                            string
	NetnsGone                                                              bool
	Reason                                                                 string
}

func (m *datapathDel) marshal() []byte {
	b := pbStrings(nil, m.ClientVersion, m.ContainerID, m.IfName, m.NetworkName, m.PodNamespace, m.PodName,
		m.PodInfraContainerID, m.PodUID)
	b = pbBool(b, 9, m.NetnsGone)
	return pbString(b, 10, m.Reason)
}

// datapathCheck is datapath.CheckRequest.
type datapathCheck struct {
	ClientVersion, ContainerID, IfName, NetworkName, Netns, IPv4Addr, HostVeth string
	RouteTableID                                                               int32
	More                                                                       []datapathInterface
}

func (m *datapathCheck) marshal() []byte {
	b := pbStrings(nil, m.ClientVersion, m.ContainerID, m.IfName, m.NetworkName, m.Netns, m.IPv4Addr, m.HostVeth)
	b = pbInt32(b, 8, m.RouteTableID)
	for _, f := range m.More {
		b = pbBytes(b, 9, f.marshal())
	}
	return b
}

// datapathInterface is datapath.Interface, one of a multi-NIC pod's
// interfaces besides the first.
type datapathInterface struct {
	PodIfName, IPv4Addr        string
	DeviceNumber, RouteTableID int32
	HostVeth, HostMAC, PodMAC  string
}

func (m *datapathInterface) marshal() []byte {
	b := pbStrings(nil, m.PodIfName, m.IPv4Addr)
	b = pbInt32(b, 3, m.DeviceNumber)
	b = pbInt32(b, 4, m.RouteTableID)
	b = pbString(b, 5, m.HostVeth)
	b = pbString(b, 6, m.HostMAC)
	return pbString(b, 7, m.PodMAC)
}

func unmarshalDatapathInterface(b []byte) (datapathInterface, error) {
	var m datapathInterface
	err := pbFields(b, func(num uint64, v uint64, p []byte) error {
		switch {
		case num == 1 && p != nil:
			m.PodIfName = string(p)
		case num == 2 && p != nil:
			m.IPv4Addr = string(p)
		case num == 3 && p == nil:
			m.DeviceNumber = int32(v)
		case num == 4 && p == nil:
			m.RouteTableID = int32(v)
		case num == 5 && p != nil:
			m.HostVeth = string(p)
		case num == 6 && p != nil:
			m.HostMAC = string(p)
		case num == 7 && p != nil:
			m.PodMAC = string(p)
		}
		return nil
	})
	return m, err
}

// datapathGC is datapath.GCRequest; Valid holds (container ID, interface)
// pairs.
type datapathGC struct {
	ClientVersion, NetworkName string
	Valid                      [][2]string
}

func (m *datapathGC) marshal() []byte {
	b := pbStrings(nil, m.ClientVersion, m.NetworkName)
	for _, a := range m.Valid {
		b = pbBytes(b, 3, pbString(pbString(nil, 1, a[0]), 2, a[1]))
	}
	return b
}

// datapathContinue is datapath.Continue: the agent's error, or applied
// (also the commit after ipamd's final answer).
func datapathContinue(errText string) []byte {
	if errText == "" {
		return pbVarint(nil, 2, 1)
	}
	return pbString(nil, 1, errText)
}

// datapathReply is datapath.Reply; Error is nil when the reply has none.
type datapathReply struct {
	Phase                                        string
	Error                                        *datapathError
	IPv4Addr                                     string
	DeviceNumber, RouteTableID                   int32
	HostVeth, HostMAC, PodMAC, NetworkPolicyMode string
	More                                         []datapathInterface // a multi-NIC pod's other interfaces
}

// datapathError is datapath.Error, a CNI error.
type datapathError struct {
	Code         uint32
	Msg, Details string
}

func unmarshalDatapathReply(b []byte) (*datapathReply, error) {
	r := &datapathReply{}
	err := pbFields(b, func(num uint64, v uint64, p []byte) error {
		switch {
		case num == 1 && p != nil:
			r.Phase = string(p)
		case num == 2 && p != nil:
			e := &datapathError{}
			if err := pbFields(p, func(num uint64, v uint64, p []byte) error {
				switch {
				case num == 1 && p == nil:
					e.Code = uint32(v)
				case num == 2 && p != nil:
					e.Msg = string(p)
				case num == 3 && p != nil:
					e.Details = string(p)
				}
				return nil
			}); err != nil {
				return err
			}
			r.Error = e
		case num == 3 && p != nil:
			r.IPv4Addr = string(p)
		case num == 4 && p == nil:
			r.DeviceNumber = int32(v)
		case num == 5 && p == nil:
			r.RouteTableID = int32(v)
		case num == 6 && p != nil:
			r.HostVeth = string(p)
		case num == 7 && p != nil:
			r.HostMAC = string(p)
		case num == 8 && p != nil:
			r.PodMAC = string(p)
		case num == 9 && p != nil:
			r.NetworkPolicyMode = string(p)
		case num == 10 && p != nil:
			f, err := unmarshalDatapathInterface(p)
			if err != nil {
				return err
			}
			r.More = append(r.More, f)
		}
		return nil
	})
	return r, err
}

// enforceNpToPod is NPBackend.EnforceNpToPod; it reports Success.
func enforceNpToPod(ctx context.Context, socket, podName, podNamespace, mode string, interfaces int32) (bool, error) {
	req := pbInt32(pbStrings(nil, podName, podNamespace, mode), 4, interfaces)
	return npSuccess(unaryCall(ctx, socket, methodEnforceNpToPod, req))
}

// deletePodNp is NPBackend.DeletePodNp; it reports Success.
func deletePodNp(ctx context.Context, socket, podName, podNamespace string) (bool, error) {
	return npSuccess(unaryCall(ctx, socket, methodDeletePodNp, pbStrings(nil, podName, podNamespace)))
}

// npSuccess reads the Success field both NPBackend replies carry first.
func npSuccess(b []byte, err error) (bool, error) {
	if err != nil {
		return false, err
	}
	ok := false
	err = pbFields(b, func(num uint64, v uint64, p []byte) error {
		if num == 1 && p == nil {
			ok = v != 0
		}
		return nil
	})
	return ok, err
}

// healthServing is grpc.health.v1.Health/Check for the server as a whole.
func healthServing(ctx context.Context, socket string) (bool, error) {
	b, err := unaryCall(ctx, socket, methodHealthCheck, nil)
	if err != nil {
		return false, err
	}
	st := uint64(0)
	err = pbFields(b, func(num uint64, v uint64, p []byte) error {
		if num == 1 && p == nil {
			st = v
		}
		return nil
	})
	return st == 1, err // SERVING
}

func pbVarint(b []byte, field int, v uint64) []byte {
	b = binary.AppendUvarint(b, uint64(field)<<3)
	return binary.AppendUvarint(b, v)
}

func pbString(b []byte, field int, s string) []byte {
	if s == "" {
		return b
	}
	b = binary.AppendUvarint(b, uint64(field)<<3|2)
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// pbStrings appends s as string fields 1, 2, ... (empty ones are not sent).
func pbStrings(b []byte, s ...string) []byte {
	for i, v := range s {
		b = pbString(b, i+1, v)
	}
	return b
}

// pbInt32 appends an int32 field unless it is zero.
func pbInt32(b []byte, field int, v int32) []byte {
	if v == 0 {
		return b
	}
	return pbVarint(b, field, uint64(int64(v)))
}

// pbBool appends a bool field unless it is false.
func pbBool(b []byte, field int, v bool) []byte {
	if !v {
		return b
	}
	return pbVarint(b, field, 1)
}

// pbBytes appends a length-delimited field, even an empty one (an
// element of a repeated message field).
func pbBytes(b []byte, field int, p []byte) []byte {
	b = binary.AppendUvarint(b, uint64(field)<<3|2)
	b = binary.AppendUvarint(b, uint64(len(p)))
	return append(b, p...)
}

var errBadMessage = errors.New("malformed protobuf message")

// pbFields calls f for every field of b: varints with p == nil,
// length-delimited fields with p != nil; fixed-width fields are skipped.
func pbFields(b []byte, f func(num uint64, v uint64, p []byte) error) error {
	for len(b) > 0 {
		tag, n := binary.Uvarint(b)
		if n <= 0 {
			return errBadMessage
		}
		b = b[n:]
		num := tag >> 3
		switch tag & 7 {
		case 0:
			v, n := binary.Uvarint(b)
			if n <= 0 {
				return errBadMessage
			}
			b = b[n:]
			if err := f(num, v, nil); err != nil {
				return err
			}
		case 1:
			if len(b) < 8 {
				return errBadMessage
			}
			b = b[8:]
		case 2:
			l, n := binary.Uvarint(b)
			if n <= 0 || l > math.MaxInt32 || uint64(len(b)-n) < l {
				return errBadMessage
			}
			p := b[n : n+int(l)]
			if p == nil {
				p = []byte{}
			}
			b = b[n+int(l):]
			if err := f(num, 0, p); err != nil {
				return err
			}
		case 5:
			if len(b) < 4 {
				return errBadMessage
			}
			b = b[4:]
		default:
			return errBadMessage
		}
	}
	return nil
}
