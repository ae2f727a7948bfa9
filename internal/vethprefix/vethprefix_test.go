package vethprefix

import "testing"

// The prefixes aws-node accepts: 1 to 4 characters, none of the names the
// node's own interfaces have.
func TestCheck(t *testing.T) {
	for p, ok := range map[string]bool{"eni": true, "a": true, "abcd": true, "": false, "abcde": false, "eth": false, "lo": false, "vlan": false} {
		if err := Check(p); (err == nil) != ok {
			t.Errorf("Check(%q) = %v, want ok %v", p, err, ok)
		}
	}
}
