// Command berth-localcloud is an AWS emulator for development and tests:
// EC2, IMDSv2, STS and EFS on one port, SigV4-verified, with its state kept
// in a directory.
package main

import (
	"github.com/berth-io/berth/internal/command"
)

func main() {
	command.Main(newRootCommand())
}
