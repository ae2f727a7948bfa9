// Command skelonly is a CNI plugin that does nothing but the CNI library's
// dispatch (skel), which #6 requires of berth-cni, and the library's
// printing of a result. BenchmarkCNIAddDel times its VERSION beside
// berth-cni's (the start-up no plugin built on skel can go below) and its
// ADD through libcni beside berth's (an ADD that assigns and wires
// nothing: what libcni and a skel plugin cost by themselves).
package main

import (
	"net"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
)

func main() {
	add := func(a *skel.CmdArgs) error {
		var d version.ConfigDecoder
		v, err := d.Decode(a.StdinData)
		if err != nil {
			return err
		}
		eth0 := 0
		r := &current.Result{CNIVersion: current.ImplementedSpecVersion,
			Interfaces: []*current.Interface{{Name: a.IfName, Sandbox: a.Netns}},
			IPs:        []*current.IPConfig{{Interface: &eth0, Address: net.IPNet{IP: net.IPv4(192, 0, 2, 1), Mask: net.CIDRMask(32, 32)}}}}
		return types.PrintResult(r, v)
	}
	nothing := func(*skel.CmdArgs) error { return nil }
	skel.PluginMainFuncs(skel.CNIFuncs{Add: add, Del: nothing, Check: nothing}, version.All, "skelonly")
}
