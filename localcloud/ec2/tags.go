package ec2

import (
	"context"
	"strings"

	"github.com/berth-io/berth/localcloud/awserr"
	"github.com/berth-io/berth/localcloud/awsquery"
)

// maxTags is EC2's limit of user tags per resource.
const maxTags = 50

func (s *Service) tagHandlers() map[string]handler {
	return map[string]handler{
		"CreateTags":   s.createTags,
		"DeleteTags":   s.deleteTags,
		"DescribeTags": s.describeTags,
	}
}

// tagsFor returns the tags of TagSpecification entries for resourceType.
func tagsFor(p awsquery.Params, resourceType string) (Tags, error) {
	specs, err := p.TagSpecs()
	if err != nil {
		return nil, err
	}
	out := Tags{}
	for _, spec := range specs {
		if spec.ResourceType == "" {
			return nil, awserr.InvalidParameterValue("TagSpecification must name a ResourceType")
		}
		if spec.ResourceType != resourceType {
			continue
		}
		for _, t := range spec.Tags {
			if strings.HasPrefix(strings.ToLower(t.Key), "aws:") {
				return nil, awserr.InvalidParameterValue("Tag keys starting with 'aws:' are reserved for internal use")
			}
			out[t.Key] = t.Value
		}
	}
	if len(out) > maxTags {
		return nil, awserr.BadRequest("TagLimitExceeded", "The maximum number of tags for a resource is %d.", maxTags)
	}
	return out, nil
}

// resourceTags finds the tag map of any taggable resource by ID.
func (s *Service) resourceTags(id string) (Tags, string, error) {
	switch {
	case strings.HasPrefix(id, "vpc-"):
		if v := s.st.VPCs[id]; v != nil {
			return v.Tags, "vpc", nil
		}
	case strings.HasPrefix(id, "subnet-"):
		if v := s.st.Subnets[id]; v != nil {
			return v.Tags, "subnet", nil
		}
	case strings.HasPrefix(id, "sg-"):
		if v := s.st.SecurityGroups[id]; v != nil {
			return v.Tags, "security-group", nil
		}
	case strings.HasPrefix(id, "i-"):
		if v := s.st.Instances[id]; v != nil {
			return v.Tags, "instance", nil
		}
	case strings.HasPrefix(id, "eni-"):
		if v := s.st.ENIs[id]; v != nil {
			return v.Tags, "network-interface", nil
		}
	case strings.HasPrefix(id, "vol-"):
		if v := s.st.Volumes[id]; v != nil {
			return v.Tags, "volume", nil
		}
	case strings.HasPrefix(id, "snap-"):
		if v := s.st.Snapshots[id]; v != nil {
			return v.Tags, "snapshot", nil
		}
	default:
		return nil, "", awserr.BadRequest("InvalidID", "The ID '%s' is not valid", id)
	}
	kind, _, _ := strings.Cut(id, "-")
	codes := map[string]string{"vpc": "InvalidVpcID.NotFound", "subnet": "InvalidSubnetID.NotFound", "sg": "InvalidGroup.NotFound",
		"i": "InvalidInstanceID.NotFound", "eni": "InvalidNetworkInterfaceID.NotFound", "vol": "InvalidVolume.NotFound", "snap": "InvalidSnapshot.NotFound"}
	return nil, "", awserr.BadRequest(codes[kind], "The ID '%s' does not exist", id)
}

func (s *Service) createTags(ctx context.Context, req *Request) (any, error) {
	resources := req.Params.List("ResourceId")
	if len(resources) == 0 {
		return nil, awserr.MissingParameter("ResourceId")
	}
	tags, err := req.Params.Tags("Tag")
	if err != nil {
		return nil, err
	}
	maps := make([]Tags, 0, len(resources))
	for _, id := range resources {
		m, _, err := s.resourceTags(id)
		if err != nil {
			return nil, err
		}
		n := len(m)
		for _, t := range tags {
			if strings.HasPrefix(strings.ToLower(t.Key), "aws:") {
				return nil, awserr.InvalidParameterValue("Tag keys starting with 'aws:' are reserved for internal use")
			}
			if _, ok := m[t.Key]; !ok {
				n++
			}
		}
		if n > maxTags {
			return nil, awserr.BadRequest("TagLimitExceeded", "The maximum number of tags for a resource is %d.", maxTags)
		}
		maps = append(maps, m)
	}
	for _, m := range maps {
		for _, t := range tags {
			m[t.Key] = t.Value
		}
	}
	s.markDirty()
	return returnTrue(), nil
}

func (s *Service) deleteTags(ctx context.Context, req *Request) (any, error) {
	resources := req.Params.List("ResourceId")
	if len(resources) == 0 {
		return nil, awserr.MissingParameter("ResourceId")
	}
	// Tag.N.Value is optional here: without it the key goes whatever its value.
	var keys []awsquery.Params = req.Params.Sub("Tag")
	maps := make([]Tags, 0, len(resources))
	for _, id := range resources {
		m, _, err := s.resourceTags(id)
		if err != nil {
			return nil, err
		}
		maps = append(maps, m)
	}
	for _, m := range maps {
		for _, k := range keys {
			key := k.Get("Key")
			if v, ok := m[key]; ok && (!k.Has("Value") || k.Get("Value") == v) {
				delete(m, key)
			}
		}
	}
	s.markDirty()
	return returnTrue(), nil
}

func (s *Service) describeTags(ctx context.Context, req *Request) (any, error) {
	filters, err := req.Params.Filters()
	if err != nil {
		return nil, err
	}
	type row struct {
		ResourceID   string `xml:"resourceId"`
		ResourceType string `xml:"resourceType"`
		Key          string `xml:"key"`
		Value        string `xml:"value"`
	}
	var rows []row
	add := func(id, typ string, tags Tags) {
		for k, v := range tags {
			rows = append(rows, row{id, typ, k, v})
		}
	}
	for id, v := range s.st.VPCs {
		add(id, "vpc", v.Tags)
	}
	for id, v := range s.st.Subnets {
		add(id, "subnet", v.Tags)
	}
	for id, v := range s.st.SecurityGroups {
		add(id, "security-group", v.Tags)
	}
	for id, v := range s.st.Instances {
		add(id, "instance", v.Tags)
	}
	for id, v := range s.st.ENIs {
		add(id, "network-interface", v.Tags)
	}
	for id, v := range s.st.Volumes {
		add(id, "volume", v.Tags)
	}
	for id, v := range s.st.Snapshots {
		add(id, "snapshot", v.Tags)
	}
	get := func(r row) getter {
		return func(name string) ([]string, bool) {
			switch name {
			case "resource-id":
				return one(r.ResourceID), true
			case "resource-type":
				return one(r.ResourceType), true
			case "key":
				return one(r.Key), true
			case "value":
				return one(r.Value), true
			}
			return nil, false
		}
	}
	if err := validateFilters(filters, get(row{})); err != nil {
		return nil, err
	}
	var kept []row
	for _, r := range rows {
		if matches(filters, nil, get(r)) {
			kept = append(kept, r)
		}
	}
	page, next, err := paginate(kept, req.Params, func(r row) string { return r.ResourceID + "\x00" + r.Key }, 5, 1000)
	if err != nil {
		return nil, err
	}
	return struct {
		Tags      []row  `xml:"tagSet>item"`
		NextToken string `xml:"nextToken,omitempty"`
	}{page, next}, nil
}
