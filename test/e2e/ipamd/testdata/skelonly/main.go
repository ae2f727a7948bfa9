// Command skelonly is a CNI plugin that does nothing but the CNI library's
// dispatch (skel), which #6 requires of berth-cni. BenchmarkCNIAddDel
// times its VERSION beside berth-cni's: the start-up that no plugin built
// on skel can go below.
package main

import (
	"errors"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"
)

func main() {
	no := func(*skel.CmdArgs) error { return errors.New("skelonly answers VERSION only") }
	skel.PluginMainFuncs(skel.CNIFuncs{Add: no, Del: no, Check: no}, version.All, "skelonly")
}
