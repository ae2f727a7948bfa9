package ec2

import (
	"net/url"
	"testing"

	"github.com/berth-io/berth/localcloud/awsquery"
)

func TestWildcard(t *testing.T) {
	for _, tc := range []struct {
		p, s string
		want bool
	}{
		{"eni-*", "eni-0abc", true},
		{"eni-?abc", "eni-0abc", true},
		{"*", "", true},
		{"a*b*c", "axxbyyc", true},
		{"a*b*c", "axxbyy", false},
		{"exact", "exact", true},
		{"exact", "exactly", false},
	} {
		if got := wildcard(tc.p, tc.s); got != tc.want {
			t.Errorf("wildcard(%q, %q) = %v", tc.p, tc.s, got)
		}
	}
}

func TestPaginate(t *testing.T) {
	items := []string{"d", "a", "c", "b", "e"}
	var seen []string
	tok := ""
	for pages := 0; ; pages++ {
		v := url.Values{"MaxResults": {"2"}}
		if tok != "" {
			v.Set("NextToken", tok)
		}
		page, next, err := paginate(items, awsquery.New(v), func(s string) string { return s }, 1, 1000)
		if err != nil {
			t.Fatal(err)
		}
		seen = append(seen, page...)
		if next == "" {
			break
		}
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
		tok = next
	}
	if len(seen) != 5 || seen[0] != "a" || seen[4] != "e" {
		t.Fatalf("pages gave %v", seen)
	}
}
