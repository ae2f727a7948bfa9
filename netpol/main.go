// Command berth-netpol is the node's network-policy agent: it enforces the
// PolicyEndpoints of the pods on its node with eBPF programs on their veths.
package main

import "github.com/berth-io/berth/internal/command"

func main() {
	command.Main(newRootCommand())
}
