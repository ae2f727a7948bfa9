// Command berth is the user CLI: the local cluster (up, down), the
// k8s-aws-v1 exec credential (token) and kubeconfig generation.
package main

import "github.com/berth-io/berth/internal/command"

func main() {
	command.Main(newRootCommand())
}
