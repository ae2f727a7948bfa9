// Package rbac embeds the RBAC manifests berth ships, so a binary (berth
// up) applies the exact roles the tests prove enough.
package rbac

import _ "embed"

// NetpolAgent is netpol-agent.yaml: the ServiceAccount kube-system/berth-netpol
// and its least-privilege role.
//
//go:embed netpol-agent.yaml
var NetpolAgent []byte
