package v1alpha1

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strconv"
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

// NewestComplete picks, among the chunks of one policy, the newest
// generation that is complete: the highest AnnotationGeneration carried by
// exactly AnnotationChunkCount chunks, each with its own
// AnnotationChunkIndex when set. The chunks are returned in index order. ok
// is false when no generation is complete; an agent then keeps enforcing
// what it had (the controller writes a whole new generation before it
// deletes the old one, so this only happens mid-write or when the policy
// is being deleted).
func NewestComplete(chunks []PolicyEndpoint) (gen int64, set []PolicyEndpoint, ok bool) {
	byGen := map[int64][]PolicyEndpoint{}
	for _, c := range chunks {
		g, err := strconv.ParseInt(c.Annotations[AnnotationGeneration], 10, 64)
		if err == nil && g > 0 {
			byGen[g] = append(byGen[g], c)
		}
	}
	for g, cs := range byGen {
		if g > gen && complete(cs) {
			gen, set, ok = g, cs, true
		}
	}
	slices.SortFunc(set, func(a, b PolicyEndpoint) int {
		return cmp.Compare(chunkIndex(a), chunkIndex(b))
	})
	return gen, set, ok
}

func complete(cs []PolicyEndpoint) bool {
	seen := map[int]bool{}
	for _, c := range cs {
		n, err := strconv.Atoi(c.Annotations[AnnotationChunkCount])
		if err != nil || n != len(cs) {
			return false
		}
		if _, has := c.Annotations[AnnotationChunkIndex]; has {
			i := chunkIndex(c)
			if i < 0 || i >= n || seen[i] {
				return false
			}
			seen[i] = true
		}
	}
	return true
}

// chunkIndex is a chunk's AnnotationChunkIndex, -1 when absent or bad.
func chunkIndex(c PolicyEndpoint) int {
	i, err := strconv.Atoi(c.Annotations[AnnotationChunkIndex])
	if err != nil {
		return -1
	}
	return i
}
