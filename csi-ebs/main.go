// Command berth-csi-ebs is the EBS CSI driver: controller (EC2 volumes,
// attachments, snapshots) and node (format, stage, publish, expand) in one
// binary, selected by --mode.
package main

import "github.com/berth-io/berth/internal/command"

func main() {
	command.Main(newRootCommand())
}
