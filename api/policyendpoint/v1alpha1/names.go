package v1alpha1

import (
	"crypto/sha256"
	"encoding/hex"
)

// AnnotationChunkIndex is a chunk's position (0 to ChunkCount-1) within its
// generation. The agent needs only the generation and the count; the index
// lets the controller compare a stored set with a computed one in order.
const AnnotationChunkIndex = "berth.io/chunk-index"

// maxLabelValue is the longest label value Kubernetes accepts.
const maxLabelValue = 63

// PolicyLabelValue is the LabelPolicyName value of a policy's chunks: the
// name itself, or for names longer than a label value may be, its first 52
// characters and a hash of the whole name. Group chunks by spec.policyRef,
// which always holds the full name; the label narrows list and watch calls.
func PolicyLabelValue(policyName string) string {
	if len(policyName) <= maxLabelValue {
		return policyName
	}
	sum := sha256.Sum256([]byte(policyName))
	return policyName[:52] + "-" + hex.EncodeToString(sum[:])[:10]
}
