// Command berth-csi-efs is the EFS CSI driver: controller (access points)
// and node (one mount per volume per node, bind-mounted into pods) in one
// binary, selected by --mode.
package main

import "github.com/berth-io/berth/internal/command"

func main() {
	command.Main(newRootCommand())
}
