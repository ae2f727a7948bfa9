// Command berth-bootstrap joins an EC2 host to a cluster from the NodeConfig
// in its user data. Today it validates and explains configurations
// (`config check`, `config explain`); `init` lands with the control plane.
package main

import "github.com/berth-io/berth/internal/command"

func main() {
	command.Main(newRootCommand())
}
