// Command berth-controlplane is a slim EKS-compatible control plane in one
// process: etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
// the IAM authenticator and the EKS management API.
package main

import "github.com/berth-io/berth/internal/command"

func main() {
	command.Main(newRootCommand())
}
