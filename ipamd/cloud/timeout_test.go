package cloud

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// An EC2 endpoint that accepts connections and never answers (a
// black-holed VPC endpoint) fails a call after one HTTP_TIMEOUT, with
// ipamd's retryer (which retries throttling twelve times), instead of
// holding it, and the pool's EC2 lock, forever or for twelve timeouts.
func TestHTTPTimeoutBoundsARequest(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held open, never answered
		}
	}()
	client := ec2.New(ec2.Options{Region: "us-west-2", BaseEndpoint: aws.String("http://" + ln.Addr().String()),
		Credentials: credentials.NewStaticCredentialsProvider("AKID", "secret", ""), HTTPClient: HTTPClient(300 * time.Millisecond),
		Retryer: Retryer()})
	// The context only keeps a broken client from hanging the test.
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	start := time.Now()
	_, err = client.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{})
	if err == nil {
		t.Fatal("a request to a silent endpoint succeeded")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("the call took %s with a 300 ms HTTP timeout", d)
	}
}
