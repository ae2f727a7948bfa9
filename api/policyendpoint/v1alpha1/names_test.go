package v1alpha1

import (
	"strconv"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func chunk(gen, count, index int) PolicyEndpoint {
	return PolicyEndpoint{ObjectMeta: metav1.ObjectMeta{
		Name: "p-" + strconv.Itoa(gen) + "-" + strconv.Itoa(index),
		Annotations: map[string]string{
			AnnotationGeneration: strconv.Itoa(gen), AnnotationChunkCount: strconv.Itoa(count), AnnotationChunkIndex: strconv.Itoa(index),
		},
	}}
}

func TestNewestComplete(t *testing.T) {
	tests := []struct {
		name   string
		chunks []PolicyEndpoint
		gen    int64
		names  []string
	}{
		{"none", nil, 0, nil},
		{"one generation, out of order", []PolicyEndpoint{chunk(3, 2, 1), chunk(3, 2, 0)}, 3, []string{"p-3-0", "p-3-1"}},
		{"newer generation half written", []PolicyEndpoint{chunk(3, 2, 1), chunk(4, 3, 0), chunk(3, 2, 0), chunk(4, 3, 2)}, 3, []string{"p-3-0", "p-3-1"}},
		{"newer generation complete", []PolicyEndpoint{chunk(3, 2, 1), chunk(4, 1, 0), chunk(3, 2, 0)}, 4, []string{"p-4-0"}},
		{"duplicate index", []PolicyEndpoint{chunk(5, 2, 0), chunk(5, 2, 0)}, 0, nil},
		{"only half of the old one left", []PolicyEndpoint{chunk(5, 2, 1)}, 0, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			gen, set, ok := NewestComplete(tc.chunks)
			var names []string
			for _, c := range set {
				names = append(names, c.Name)
			}
			if gen != tc.gen || ok != (tc.gen > 0) || len(names) != len(tc.names) {
				t.Fatalf("gen %d ok %v %v, want %d %v", gen, ok, names, tc.gen, tc.names)
			}
			for i := range names {
				if names[i] != tc.names[i] {
					t.Fatalf("chunks %v, want %v", names, tc.names)
				}
			}
		})
	}
}
