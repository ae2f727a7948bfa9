package netpolicy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"

	networkingv1 "k8s.io/api/networking/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	pe "github.com/berth-io/berth/api/policyendpoint/v1alpha1"
)

// DefaultChunkSize is how many items (pod endpoints, ingress and egress
// entries) one PolicyEndpoint holds at most, as the AWS controller's
// --endpoint-chunk-size.
const DefaultChunkSize = 200

// Chunk splits a resolved spec into chunks of at most size items: pod
// endpoints first, then ingress, then egress entries, in order. Every chunk
// carries the podSelector, policyRef and podIsolation; there is always at
// least one chunk, so a policy that selects nothing still isolates.
func Chunk(spec pe.PolicyEndpointSpec, size int) []pe.PolicyEndpointSpec {
	if size <= 0 {
		size = DefaultChunkSize
	}
	total := len(spec.PodSelectorEndpoints) + len(spec.Ingress) + len(spec.Egress)
	chunks := make([]pe.PolicyEndpointSpec, max(1, (total+size-1)/size))
	for i := range chunks {
		chunks[i] = pe.PolicyEndpointSpec{
			PodSelector:  spec.PodSelector.DeepCopy(),
			PolicyRef:    spec.PolicyRef,
			PodIsolation: slices.Clone(spec.PodIsolation),
		}
	}
	n := 0
	for _, p := range spec.PodSelectorEndpoints {
		c := &chunks[n/size]
		c.PodSelectorEndpoints = append(c.PodSelectorEndpoints, p)
		n++
	}
	for _, e := range spec.Ingress {
		c := &chunks[n/size]
		c.Ingress = append(c.Ingress, e)
		n++
	}
	for _, e := range spec.Egress {
		c := &chunks[n/size]
		c.Egress = append(c.Egress, e)
		n++
	}
	return chunks
}

// maxName is the longest object name (a DNS subdomain).
const maxName = 253

// ObjectName is the name of chunk index of generation gen of a policy:
// "<policy>-<gen>-<index>". A name too long for that keeps a prefix of the
// policy name and a hash of the whole.
func ObjectName(policy string, gen int64, index int) string {
	suffix := fmt.Sprintf("-%d-%d", gen, index)
	if len(policy)+len(suffix) <= maxName {
		return policy + suffix
	}
	sum := sha256.Sum256([]byte(policy))
	h := "-" + hex.EncodeToString(sum[:])[:10]
	return policy[:maxName-len(suffix)-len(h)] + h + suffix
}

// chunkObject is chunk index of count of generation gen of np.
func chunkObject(np *networkingv1.NetworkPolicy, spec pe.PolicyEndpointSpec, gen int64, index, count int) *pe.PolicyEndpoint {
	return &pe.PolicyEndpoint{
		TypeMeta: metav1.TypeMeta{APIVersion: pe.Group + "/" + pe.Version, Kind: pe.Kind},
		ObjectMeta: metav1.ObjectMeta{
			Name:      ObjectName(np.Name, gen, index),
			Namespace: np.Namespace,
			Labels:    map[string]string{pe.LabelPolicyName: pe.PolicyLabelValue(np.Name)},
			Annotations: map[string]string{
				pe.AnnotationGeneration: strconv.FormatInt(gen, 10),
				pe.AnnotationChunkCount: strconv.Itoa(count),
				pe.AnnotationChunkIndex: strconv.Itoa(index),
			},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: networkingv1.SchemeGroupVersion.String(), Kind: "NetworkPolicy",
				Name: np.Name, UID: np.UID, Controller: ptr(true),
			}},
		},
		Spec: spec,
	}
}

// toUnstructured and fromUnstructured convert between the typed objects and
// what the dynamic client speaks.
func toUnstructured(obj *pe.PolicyEndpoint) (*unstructured.Unstructured, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, fmt.Errorf("convert policy endpoint %s: %w", obj.Name, err)
	}
	return &unstructured.Unstructured{Object: m}, nil
}

func fromUnstructured(u *unstructured.Unstructured) (*pe.PolicyEndpoint, error) {
	var obj pe.PolicyEndpoint
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &obj); err != nil {
		return nil, fmt.Errorf("convert policy endpoint %s/%s: %w", u.GetNamespace(), u.GetName(), err)
	}
	return &obj, nil
}

// stored is what a chunk's annotations say about it; gen is 0 when they
// do not parse.
type stored struct {
	obj          *pe.PolicyEndpoint
	gen          int64
	count, index int
}

func parseStored(obj *pe.PolicyEndpoint) stored {
	s := stored{obj: obj}
	gen, err1 := strconv.ParseInt(obj.Annotations[pe.AnnotationGeneration], 10, 64)
	count, err2 := strconv.Atoi(obj.Annotations[pe.AnnotationChunkCount])
	index, err3 := strconv.Atoi(obj.Annotations[pe.AnnotationChunkIndex])
	if err1 == nil && err2 == nil && err3 == nil && gen > 0 && count > 0 && index >= 0 && index < count {
		s.gen, s.count, s.index = gen, count, index
	}
	return s
}

// ownedBy reports whether obj's controller reference is np (a policy
// deleted and re-created under the same name has a new UID; the garbage
// collector removes its predecessor's chunks).
func ownedBy(obj *pe.PolicyEndpoint, np *networkingv1.NetworkPolicy) bool {
	ref := metav1.GetControllerOf(obj)
	return ref != nil && ref.UID == np.UID && ref.Kind == "NetworkPolicy"
}

// plan is the writes that bring a policy's stored chunks to the desired
// ones: create the chunks of a new generation, then delete every other
// object. Chunks are never updated in place, so at every moment the API
// holds at least one complete generation (the old one until the last chunk
// of the new one exists), and no generation is ever partly overwritten.
type plan struct {
	unchanged bool  // the newest complete generation already holds desired
	gen       int64 // the generation that is (or will be) complete
	create    []*pe.PolicyEndpoint
	delete    []string // names, deleted only after every create succeeded
}

// planWrites compares the desired chunks with a policy's existing objects.
// floor is the highest generation this controller wrote for the policy (a
// cache may not show it yet); the next generation is above it and above
// every existing one.
func planWrites(np *networkingv1.NetworkPolicy, desired []pe.PolicyEndpointSpec, existing []*pe.PolicyEndpoint, floor int64) plan {
	byGen := map[int64][]stored{}
	top := floor
	for _, obj := range existing {
		s := parseStored(obj)
		byGen[s.gen] = append(byGen[s.gen], s)
		top = max(top, s.gen)
	}
	var current int64
	for gen, chunks := range byGen {
		if gen > current && complete(chunks, np) {
			current = gen
		}
	}
	if current > 0 && sameSpecs(byGen[current], desired) {
		p := plan{unchanged: true, gen: current}
		for _, obj := range existing {
			if s := parseStored(obj); s.gen != current {
				p.delete = append(p.delete, obj.Name)
			}
		}
		slices.Sort(p.delete)
		return p
	}
	p := plan{gen: top + 1}
	for i, spec := range desired {
		p.create = append(p.create, chunkObject(np, spec, p.gen, i, len(desired)))
	}
	for _, obj := range existing {
		p.delete = append(p.delete, obj.Name)
	}
	slices.Sort(p.delete)
	return p
}

// complete reports whether chunks (all of one generation) are that
// generation's full set, indices 0 to count-1 once each, owned by np.
func complete(chunks []stored, np *networkingv1.NetworkPolicy) bool {
	if len(chunks) == 0 || chunks[0].gen == 0 || len(chunks) != chunks[0].count {
		return false
	}
	seen := make([]bool, len(chunks))
	for _, c := range chunks {
		if c.count != len(chunks) || seen[c.index] || !ownedBy(c.obj, np) {
			return false
		}
		seen[c.index] = true
	}
	return true
}

// sameSpecs reports whether a complete generation holds exactly desired,
// chunk by chunk.
func sameSpecs(chunks []stored, desired []pe.PolicyEndpointSpec) bool {
	if len(chunks) != len(desired) {
		return false
	}
	for _, c := range chunks {
		want, err := normalize(desired[c.index])
		if err != nil || !apiequality.Semantic.DeepEqual(want, c.obj.Spec) {
			return false
		}
	}
	return true
}

// normalize passes a spec through the conversion stored objects take, so
// that omitted empty fields compare equal.
func normalize(spec pe.PolicyEndpointSpec) (pe.PolicyEndpointSpec, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&spec)
	if err != nil {
		return pe.PolicyEndpointSpec{}, err
	}
	var out pe.PolicyEndpointSpec
	err = runtime.DefaultUnstructuredConverter.FromUnstructured(m, &out)
	return out, err
}
