// Package crds embeds the CustomResourceDefinitions berth installs, so a
// binary can install the exact manifests shipped in this directory.
package crds

import _ "embed"

// PolicyEndpoint is networking.k8s.aws_policyendpoints.yaml.
//
//go:embed networking.k8s.aws_policyendpoints.yaml
var PolicyEndpoint []byte
