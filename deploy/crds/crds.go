// Package crds embeds the CustomResourceDefinitions berth installs, so a
// binary can install the exact manifests shipped in this directory.
package crds

import _ "embed"

// PolicyEndpoint is networking.k8s.aws_policyendpoints.yaml.
//
//go:embed networking.k8s.aws_policyendpoints.yaml
var PolicyEndpoint []byte

// ENIConfig is crd.k8s.amazonaws.com_eniconfigs.yaml (custom networking).
//
//go:embed crd.k8s.amazonaws.com_eniconfigs.yaml
var ENIConfig []byte
