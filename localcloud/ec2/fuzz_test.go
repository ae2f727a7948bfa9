package ec2

import (
	"context"
	"log/slog"
	"net/url"
	"testing"

	"github.com/berth-io/berth/localcloud/awserr"
	"github.com/berth-io/berth/localcloud/awsquery"
)

// FuzzQuery feeds arbitrary form bodies to every EC2 action: each must end
// in a response or a 4xx AWS error, never a panic or an InternalError.
func FuzzQuery(f *testing.F) {
	svc, err := New(testConfig(), f.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{
		"Action=CreateVpc&CidrBlock=10.0.0.0/16",
		"Action=CreateSubnet&VpcId=vpc-1&CidrBlock=10.0.0.0/24",
		"Action=DescribeNetworkInterfaces&Filter.1.Name=subnet-id&Filter.1.Value.1=*&MaxResults=5&NextToken=%%%",
		"Action=RunInstances&ImageId=ami-1&MinCount=1&MaxCount=2&InstanceType=m5.large&UserData=!!",
		"Action=AssignPrivateIpAddresses&NetworkInterfaceId=eni-1&SecondaryPrivateIpAddressCount=-1",
		"Action=CreateTags&ResourceId.1=vpc-1&Tag.1.Key=&Tag.1.Value=x",
		"Action=CreateVolume&AvailabilityZone=us-west-2a&Size=99999999999999999999",
		"Action=CreateNetworkInterface&SubnetId=subnet-1&Ipv4Prefix.1.Ipv4Prefix=10.0.0.1/27",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, body string) {
		form, err := url.ParseQuery(body)
		if err != nil {
			return
		}
		_, err = svc.Handle(context.Background(), &Request{Action: form.Get("Action"), Params: awsquery.New(form), Account: "000000000000"})
		if err != nil {
			if e := awserr.As(err); e.Status >= 500 {
				t.Fatalf("%s: %v", body, err)
			}
		}
	})
}
