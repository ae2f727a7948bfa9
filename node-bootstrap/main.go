// Command berth-bootstrap joins an EC2 host to a cluster from the NodeConfig
// in its user data: `init` resolves the configuration, discovers the
// instance, writes kubelet's and containerd's files and starts them;
// `config check` and `config explain` validate and explain without writing.
package main

import "github.com/berth-io/berth/internal/command"

func main() {
	command.Main(newRootCommand())
}
