// Command berth-cni is the CNI plugin kubelet's runtime executes for every
// pod: it asks berth-ipamd for a VPC address and wires the pod's veth,
// addresses, routes, neighbour and rules. It links no Kubernetes or AWS SDK
// code, because its start-up time is pod latency.
package main

import (
	"runtime"

	"github.com/containernetworking/cni/pkg/skel"
	cniversion "github.com/containernetworking/cni/pkg/version"

	// One P and a grown stack from the first inits on (see the package).
	_ "github.com/berth-io/berth/cni-plugin/internal/early"
	"github.com/berth-io/berth/internal/version"
)

// Netlink and setns work on the calling OS thread; keep main on one.
func init() { runtime.LockOSThread() }

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{Add: cmdAdd, Del: cmdDel, Check: cmdCheck, Status: cmdStatus, GC: cmdGC},
		cniversion.All, "berth-cni "+version.Version)
}
