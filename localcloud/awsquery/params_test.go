package awsquery

import (
	"net/url"
	"reflect"
	"testing"

	"github.com/berth-io/berth/localcloud/awserr"
)

func TestFlattenedParameters(t *testing.T) {
	v, err := url.ParseQuery("Action=DescribeNetworkInterfaces&Filter.2.Name=tag%3Acluster&Filter.2.Value.1=a" +
		"&Filter.1.Name=subnet-id&Filter.1.Value.2=subnet-2&Filter.1.Value.1=subnet-1&Filter.10.Name=vpc-id" +
		"&NetworkInterfaceId.2=eni-b&NetworkInterfaceId.1=eni-a&MaxResults=5" +
		"&TagSpecification.1.ResourceType=network-interface&TagSpecification.1.Tag.1.Key=k&TagSpecification.1.Tag.1.Value=v")
	if err != nil {
		t.Fatal(err)
	}
	p := New(v)
	if got := p.List("NetworkInterfaceId"); !reflect.DeepEqual(got, []string{"eni-a", "eni-b"}) {
		t.Errorf("List = %v", got)
	}
	fs, err := p.Filters()
	if err != nil {
		t.Fatal(err)
	}
	want := []Filter{{"subnet-id", []string{"subnet-1", "subnet-2"}}, {"tag:cluster", []string{"a"}}, {"vpc-id", nil}}
	if !reflect.DeepEqual(fs, want) {
		t.Errorf("Filters = %+v, want %+v", fs, want)
	}
	if n, err := p.Int("MaxResults", 0); n != 5 || err != nil {
		t.Errorf("Int = %d, %v", n, err)
	}
	specs, err := p.TagSpecs()
	if err != nil || len(specs) != 1 || specs[0].ResourceType != "network-interface" || specs[0].Tags[0] != (Tag{"k", "v"}) {
		t.Errorf("TagSpecs = %+v, %v", specs, err)
	}
}

func TestBadValues(t *testing.T) {
	p := New(url.Values{"MaxResults": {"ten"}, "DryRun": {"maybe"}, "Filter.1.Value.1": {"x"}})
	for name, err := range map[string]error{
		"int":      func() error { _, err := p.Int("MaxResults", 0); return err }(),
		"bool":     func() error { _, err := p.Bool("DryRun", false); return err }(),
		"filter":   func() error { _, err := p.Filters(); return err }(),
		"required": func() error { _, err := p.Required("VpcId"); return err }(),
	} {
		e := awserr.As(err)
		if err == nil || e.Status != 400 {
			t.Errorf("%s: got %v, want a 400 AWS error", name, err)
		}
	}
}
