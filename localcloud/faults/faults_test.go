package faults

import (
	"testing"
	"time"
)

func TestBucketThrottlesAndRefills(t *testing.T) {
	now := time.Unix(1000, 0)
	f := New(func() time.Time { return now })
	f.SetBuckets(map[Category]Bucket{ENIMutating: {Capacity: 3, Refill: 1}})
	for i := 0; i < 3; i++ {
		if _, err := f.Before("ec2", "AssignPrivateIpAddresses", ENIMutating); err != nil {
			t.Fatalf("call %d throttled early: %v", i, err)
		}
	}
	if _, err := f.Before("ec2", "AssignPrivateIpAddresses", ENIMutating); err == nil || err.Code != "RequestLimitExceeded" || err.Status != 503 {
		t.Fatalf("4th call: %v, want RequestLimitExceeded 503", err)
	}
	now = now.Add(1100 * time.Millisecond)
	if _, err := f.Before("ec2", "AssignPrivateIpAddresses", ENIMutating); err != nil {
		t.Fatalf("after refill: %v", err)
	}
	calls, thr := f.Calls()
	if calls["ec2:AssignPrivateIpAddresses"] != 5 || thr["ec2:AssignPrivateIpAddresses"] != 1 {
		t.Fatalf("calls %v throttled %v", calls, thr)
	}
}

func TestInjectedFaultCount(t *testing.T) {
	f := New(nil)
	f.SetFaults(map[string]Fault{"ec2:AttachNetworkInterface": {ErrorRate: 1, ErrorCode: "AttachmentLimitExceeded", Count: 2, LatencyMS: 5}})
	for i := 0; i < 2; i++ {
		lat, err := f.Before("ec2", "AttachNetworkInterface", Mutating)
		if err == nil || err.Code != "AttachmentLimitExceeded" || lat != 5*time.Millisecond {
			t.Fatalf("call %d: %v %v", i, lat, err)
		}
	}
	if _, err := f.Before("ec2", "AttachNetworkInterface", Mutating); err != nil {
		t.Fatalf("fault outlived its count: %v", err)
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		action   string
		filtered bool
		want     Category
	}{
		{"DescribeNetworkInterfaces", false, UnfilteredDescribe},
		{"DescribeNetworkInterfaces", true, NonMutating},
		{"DescribeInstances", false, NonMutating},
		{"AssignPrivateIpAddresses", false, ENIMutating},
		{"AttachNetworkInterface", false, ENIMutating},
		{"CreateTags", false, CreateTags},
		{"CreateVolume", false, Mutating},
		{"RunInstances", false, ResourceIntensive},
	} {
		if got := Classify(tc.action, tc.filtered); got != tc.want {
			t.Errorf("Classify(%s, %v) = %s, want %s", tc.action, tc.filtered, got, tc.want)
		}
	}
}
