// Command berth-ipamd is the node IPAM daemon: it keeps a warm pool of VPC
// addresses on the node's ENIs and hands them to pods through berth-cni.
package main

import "github.com/berth-io/berth/internal/command"

func main() {
	command.Main(newRootCommand())
}
