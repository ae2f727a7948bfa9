// Package awsquery parses the AWS Query protocol (form-encoded Action,
// Version and flattened parameters such as Filter.1.Value.2) used by EC2 and
// STS, and renders their XML responses and errors.
package awsquery

import (
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/berth-io/berth/localcloud/awserr"
)

// Params is a view of the request's parameters, possibly under a prefix
// (the members of Filter.1 are the Params of Sub("Filter")[0]).
type Params struct {
	values url.Values
	prefix string
}

// New wraps parsed form values.
func New(v url.Values) Params { return Params{values: v} }

// Get returns the value of name, or "".
func (p Params) Get(name string) string { return p.values.Get(p.prefix + name) }

// Has reports whether name was sent.
func (p Params) Has(name string) bool {
	_, ok := p.values[p.prefix+name]
	return ok
}

// Required returns the value of name or MissingParameter.
func (p Params) Required(name string) (string, error) {
	v := p.Get(name)
	if v == "" {
		return "", awserr.MissingParameter(p.prefix + name)
	}
	return v, nil
}

// Int returns the integer value of name, def when absent, or
// InvalidParameterValue when it is not an integer.
func (p Params) Int(name string, def int) (int, error) {
	v := p.Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, awserr.InvalidParameterValue("Value (%s) for parameter %s is invalid. Expected an integer.", v, p.prefix+name)
	}
	return n, nil
}

// Bool returns the boolean value of name (def when absent).
func (p Params) Bool(name string, def bool) (bool, error) {
	v := p.Get(name)
	switch strings.ToLower(v) {
	case "":
		return def, nil
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, awserr.InvalidParameterValue("Value (%s) for parameter %s is invalid. Expected a boolean.", v, p.prefix+name)
}

// indices returns the sorted distinct N of every "<prefix><name>.N" key.
func (p Params) indices(name string) []int {
	base := p.prefix + name + "."
	seen := map[int]bool{}
	for k := range p.values {
		rest, ok := strings.CutPrefix(k, base)
		if !ok {
			continue
		}
		num, _, _ := strings.Cut(rest, ".")
		n, err := strconv.Atoi(num)
		if err != nil || n < 1 {
			continue
		}
		seen[n] = true
	}
	out := make([]int, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Ints(out)
	return out
}

// List returns the values of name.1, name.2, ... in index order.
func (p Params) List(name string) []string {
	var out []string
	for _, n := range p.indices(name) {
		if v, ok := p.values[p.prefix+name+"."+strconv.Itoa(n)]; ok && len(v) > 0 {
			out = append(out, v[0])
		}
	}
	return out
}

// Sub returns the member structures name.1., name.2., ... in index order.
func (p Params) Sub(name string) []Params {
	var out []Params
	for _, n := range p.indices(name) {
		out = append(out, Params{values: p.values, prefix: p.prefix + name + "." + strconv.Itoa(n) + "."})
	}
	return out
}

// Struct returns the view of a single nested structure "name.".
func (p Params) Struct(name string) Params {
	return Params{values: p.values, prefix: p.prefix + name + "."}
}

// Filter is one EC2 Filter.N.
type Filter struct {
	Name   string
	Values []string
}

// Filters parses Filter.N.Name / Filter.N.Value.M.
func (p Params) Filters() ([]Filter, error) {
	var out []Filter
	for _, f := range p.Sub("Filter") {
		name := f.Get("Name")
		if name == "" {
			return nil, awserr.InvalidParameterValue("The filter 'null' is invalid")
		}
		out = append(out, Filter{Name: name, Values: f.List("Value")})
	}
	return out, nil
}

// Tag is one key/value pair.
type Tag struct {
	Key   string
	Value string
}

// Tags parses name.N.Key / name.N.Value.
func (p Params) Tags(name string) ([]Tag, error) {
	var out []Tag
	for _, t := range p.Sub(name) {
		k := t.Get("Key")
		if k == "" {
			return nil, awserr.InvalidParameterValue("Tag keys must be non-empty")
		}
		if len(k) > 128 || len(t.Get("Value")) > 256 {
			return nil, awserr.InvalidParameterValue("Tag key or value exceeds the maximum length")
		}
		out = append(out, Tag{Key: k, Value: t.Get("Value")})
	}
	return out, nil
}

// TagSpec is one TagSpecification.N.
type TagSpec struct {
	ResourceType string
	Tags         []Tag
}

// TagSpecs parses TagSpecification.N.ResourceType / .Tag.M.Key / .Tag.M.Value.
func (p Params) TagSpecs() ([]TagSpec, error) {
	var out []TagSpec
	for _, s := range p.Sub("TagSpecification") {
		tags, err := s.Tags("Tag")
		if err != nil {
			return nil, err
		}
		out = append(out, TagSpec{ResourceType: s.Get("ResourceType"), Tags: tags})
	}
	return out, nil
}
