package ec2

import (
	"encoding/base64"
	"sort"
	"strings"

	"github.com/berth-io/berth/localcloud/awserr"
	"github.com/berth-io/berth/localcloud/awsquery"
)

// getter returns the values a resource has for a filter name, and false
// for a filter name the resource type does not support.
type getter func(name string) ([]string, bool)

// validateFilters rejects filter names a resource type does not know, as
// EC2 does, even when there is nothing to filter. zero is a getter of a
// zero-valued resource.
func validateFilters(filters []awsquery.Filter, zero getter) error {
	for _, f := range filters {
		if isTagFilter(f.Name) {
			continue
		}
		if _, ok := zero(f.Name); !ok {
			return awserr.InvalidParameterValue("The filter '%s' is invalid", f.Name)
		}
	}
	return nil
}

func isTagFilter(name string) bool {
	return strings.HasPrefix(name, "tag:") || name == "tag-key" || name == "tag-value"
}

// matches reports whether a resource passes every filter (AND across
// filters, OR across one filter's values; * and ? are wildcards).
func matches(filters []awsquery.Filter, tags Tags, get getter) bool {
	for _, f := range filters {
		var have []string
		switch {
		case strings.HasPrefix(f.Name, "tag:"):
			v, ok := tags[strings.TrimPrefix(f.Name, "tag:")]
			if !ok {
				return false
			}
			have = []string{v}
		case f.Name == "tag-key":
			for k := range tags {
				have = append(have, k)
			}
		case f.Name == "tag-value":
			for _, v := range tags {
				have = append(have, v)
			}
		default:
			have, _ = get(f.Name)
		}
		if !anyMatch(f.Values, have) {
			return false
		}
	}
	return true
}

func anyMatch(patterns, have []string) bool {
	for _, p := range patterns {
		for _, h := range have {
			if wildcard(p, h) {
				return true
			}
		}
	}
	return false
}

// wildcard matches s against p where * is any run and ? any one character.
func wildcard(p, s string) bool {
	if !strings.ContainsAny(p, "*?") {
		return p == s
	}
	// Iterative glob with backtracking to the last star.
	pi, si, star, mark := 0, 0, -1, 0
	for si < len(s) {
		switch {
		case pi < len(p) && (p[pi] == '?' || p[pi] == s[si]):
			pi++
			si++
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, si
			pi++
		case star >= 0:
			pi = star + 1
			mark++
			si = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

// paginate sorts items by key and returns one page per MaxResults and
// NextToken. A NextToken is the opaque key of the last item returned.
func paginate[T any](items []T, p awsquery.Params, key func(T) string, minResults, maxResults int) ([]T, string, error) {
	sort.Slice(items, func(i, j int) bool { return key(items[i]) < key(items[j]) })
	limit, err := p.Int("MaxResults", 0)
	if err != nil {
		return nil, "", err
	}
	if p.Has("MaxResults") && (limit < minResults || limit > maxResults) {
		return nil, "", awserr.InvalidParameterValue("Value ( %d ) for parameter maxResults is invalid. Expecting a value between %d and %d.", limit, minResults, maxResults)
	}
	start := 0
	if tok := p.Get("NextToken"); tok != "" {
		raw, err := base64.RawURLEncoding.DecodeString(tok)
		if err != nil || len(raw) == 0 {
			return nil, "", awserr.BadRequest("InvalidParameterValue", "Invalid NextToken: %q", tok)
		}
		after := string(raw)
		start = sort.Search(len(items), func(i int) bool { return key(items[i]) > after })
	}
	items = items[start:]
	if limit == 0 || len(items) <= limit {
		return items, "", nil
	}
	page := items[:limit]
	return page, base64.RawURLEncoding.EncodeToString([]byte(key(page[len(page)-1]))), nil
}

// ids returns the requested IDs (name.N) and whether any were given.
func ids(p awsquery.Params, name string) (map[string]bool, bool) {
	list := p.List(name)
	if len(list) == 0 {
		return nil, false
	}
	out := make(map[string]bool, len(list))
	for _, id := range list {
		out[id] = true
	}
	return out, true
}

// one returns the single value of a filter field as a slice.
func one(v string) []string {
	if v == "" {
		return nil
	}
	return []string{v}
}
