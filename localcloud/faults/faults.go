// Package faults makes localcloud behave like a busy AWS: per-category token
// buckets that answer RequestLimitExceeded as EC2's documented request
// throttling does, injected errors and latency per operation, and call
// counts that tests read to prove how many API calls a component made.
package faults

import (
	"crypto/rand"
	"encoding/binary"
	"maps"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/berth-io/berth/localcloud/awserr"
)

// Bucket is a token bucket: Capacity tokens, refilled at Refill per second.
type Bucket struct {
	Capacity float64 `json:"capacity"`
	Refill   float64 `json:"refill"`
	tokens   float64
	last     time.Time
}

func (b *Bucket) take(now time.Time) bool {
	if b.last.IsZero() {
		b.tokens, b.last = b.Capacity, now
	}
	b.tokens += now.Sub(b.last).Seconds() * b.Refill
	if b.tokens > b.Capacity {
		b.tokens = b.Capacity
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// Category names a throttling bucket of EC2's documented request rate limits.
type Category string

const (
	NonMutating        Category = "non-mutating"            // Describe*: 100, 20/s
	UnfilteredDescribe Category = "unfiltered-non-mutating" // unfiltered DescribeNetworkInterfaces and friends: 50, 10/s
	ENIMutating        Category = "eni-mutating"            // network-interface and IP mutations: 100, 5/s
	CreateTags         Category = "create-tags"             // 100, 10/s
	Mutating           Category = "mutating"                // other mutations: 200, 5/s
	ResourceIntensive  Category = "resource-intensive"      // RunInstances, TerminateInstances: 1000, 2/s
)

// DefaultBuckets are EC2's published defaults.
func DefaultBuckets() map[Category]Bucket {
	return map[Category]Bucket{
		NonMutating:        {Capacity: 100, Refill: 20},
		UnfilteredDescribe: {Capacity: 50, Refill: 10},
		ENIMutating:        {Capacity: 100, Refill: 5},
		CreateTags:         {Capacity: 100, Refill: 10},
		Mutating:           {Capacity: 200, Refill: 5},
		ResourceIntensive:  {Capacity: 1000, Refill: 2},
	}
}

// Classify maps an EC2 action to its bucket; filtered says whether a
// Describe call was narrowed by filters or IDs.
func Classify(action string, filtered bool) Category {
	switch {
	case action == "CreateTags":
		return CreateTags
	case action == "RunInstances" || action == "TerminateInstances":
		return ResourceIntensive
	case action == "DescribeNetworkInterfaces" && !filtered:
		return UnfilteredDescribe
	case strings.HasPrefix(action, "Describe"), strings.HasPrefix(action, "Get"):
		return NonMutating
	case strings.Contains(action, "NetworkInterface"), strings.Contains(action, "PrivateIpAddresses"),
		strings.Contains(action, "Ipv6Addresses"):
		return ENIMutating
	}
	return Mutating
}

// Fault is what to do to calls of one operation.
type Fault struct {
	// ErrorRate in [0,1]: the share of calls that fail with ErrorCode.
	ErrorRate float64 `json:"errorRate"`
	// ErrorCode defaults to InternalError (500); RequestLimitExceeded and
	// the like get their usual status.
	ErrorCode    string `json:"errorCode,omitempty"`
	ErrorMessage string `json:"errorMessage,omitempty"`
	// LatencyMS is added to every call before it runs.
	LatencyMS int `json:"latencyMs,omitempty"`
	// Count limits how many calls fail (0 = unlimited).
	Count int `json:"count,omitempty"`
}

// Faults holds buckets, injected faults and call counts. Keys of faults and
// counts are "<service>:<operation>", e.g. "ec2:AttachNetworkInterface".
type Faults struct {
	mu       sync.Mutex
	now      func() time.Time
	throttle bool
	buckets  map[Category]*Bucket
	faults   map[string]*Fault
	calls    map[string]int
	thrott   map[string]int
}

// New returns fault state with EC2's default buckets and throttling on.
func New(now func() time.Time) *Faults {
	if now == nil {
		now = time.Now
	}
	f := &Faults{now: now, throttle: true, faults: map[string]*Fault{}, calls: map[string]int{}, thrott: map[string]int{}}
	f.SetBuckets(DefaultBuckets())
	return f
}

// SetBuckets replaces the throttling buckets (full again).
func (f *Faults) SetBuckets(b map[Category]Bucket) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.buckets = map[Category]*Bucket{}
	for c, v := range b {
		v := v
		v.tokens, v.last = 0, time.Time{}
		f.buckets[c] = &v
	}
}

// SetThrottling turns request throttling on or off.
func (f *Faults) SetThrottling(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.throttle = on
}

// SetFaults replaces the injected faults.
func (f *Faults) SetFaults(m map[string]Fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults = map[string]*Fault{}
	for k, v := range m {
		v := v
		f.faults[k] = &v
	}
}

// Faults returns the injected faults.
func (f *Faults) Faults() map[string]Fault {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]Fault{}
	for k, v := range f.faults {
		out[k] = *v
	}
	return out
}

// Calls returns the per-operation call counts (including throttled and
// failed calls) and how many of them were throttled.
func (f *Faults) Calls() (calls, throttled map[string]int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.calls), maps.Clone(f.thrott)
}

// ResetCalls zeroes the counters.
func (f *Faults) ResetCalls() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls, f.thrott = map[string]int{}, map[string]int{}
}

// Before is called for every operation before it runs. It counts the call,
// returns the latency to add and, when the call must fail (throttled or an
// injected fault), the error to answer with.
func (f *Faults) Before(service, op string, cat Category) (time.Duration, *awserr.Error) {
	key := service + ":" + op
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[key]++
	var latency time.Duration
	fault := f.faults[key]
	if fault == nil {
		fault = f.faults[service+":*"]
	}
	if fault != nil {
		latency = time.Duration(fault.LatencyMS) * time.Millisecond
	}
	if f.throttle && cat != "" {
		if b := f.buckets[cat]; b != nil && !b.take(f.now()) {
			f.thrott[key]++
			return latency, awserr.Throttled()
		}
	}
	if fault != nil && fault.ErrorRate > 0 && chance(fault.ErrorRate) {
		if fault.Count > 0 {
			fault.Count--
			if fault.Count == 0 {
				fault.ErrorRate = 0
			}
		}
		return latency, faultError(fault)
	}
	return latency, nil
}

func faultError(f *Fault) *awserr.Error {
	code := f.ErrorCode
	if code == "" {
		code = "InternalError"
	}
	msg := f.ErrorMessage
	if msg == "" {
		msg = "injected fault: " + code
	}
	status := http.StatusBadRequest
	switch code {
	case "InternalError", "InternalFailure", "ServiceUnavailable", "Unavailable":
		status = http.StatusInternalServerError
	case "RequestLimitExceeded", "Throttling", "ThrottlingException":
		status = http.StatusServiceUnavailable
	}
	return &awserr.Error{Code: code, Message: msg, Status: status}
}

func chance(p float64) bool {
	if p >= 1 {
		return true
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	return float64(binary.BigEndian.Uint64(b[:])>>11)/float64(1<<53) < p
}
