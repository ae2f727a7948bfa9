// Package authn authenticates Kubernetes requests carrying k8s-aws-v1 tokens,
// as the AWS IAM Authenticator does for EKS: a token is a presigned STS
// GetCallerIdentity URL; it is checked strictly, sent to STS, and the
// identity STS returns is mapped to a Kubernetes user through access
// entries and the aws-auth ConfigMap.
package authn

import (
	"encoding/base64"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Token limits and names, as EKS uses them.
const (
	TokenPrefix = "k8s-aws-v1."
	// MaxTokenBytes bounds a token so a client cannot make the server
	// decode and forward arbitrarily large requests.
	MaxTokenBytes = 4096
	// ClusterIDHeader is the signed header naming the cluster the token is for.
	ClusterIDHeader = "x-k8s-aws-id"
	// TokenLifetime is how long after signing a token is accepted.
	TokenLifetime = 15 * time.Minute
	// clockSkew tolerates a client clock slightly ahead of ours.
	clockSkew = 5 * time.Minute
)

// allowedParams are the query parameters a presigned GetCallerIdentity URL
// may carry (lower-cased); anything else could change what STS is asked.
var allowedParams = map[string]bool{
	"action":               true,
	"version":              true,
	"x-amz-algorithm":      true,
	"x-amz-credential":     true,
	"x-amz-date":           true,
	"x-amz-expires":        true,
	"x-amz-security-token": true,
	"x-amz-signature":      true,
	"x-amz-signedheaders":  true,
}

// TokenError is a token rejected before STS was asked.
type TokenError struct{ Reason string }

func (e *TokenError) Error() string { return "invalid token: " + e.Reason }

func reject(format string, args ...any) error {
	return &TokenError{Reason: fmt.Sprintf(format, args...)}
}

// Endpoint is an STS endpoint tokens may name.
type Endpoint struct {
	Host string
	// Insecure allows http, only for a local STS (localcloud).
	Insecure bool
}

// Parsed is a token that passed the static checks.
type Parsed struct {
	URL      *url.URL
	SignedAt time.Time
	// AccessKeyID is the key in the credential scope, for {{AccessKeyID}}.
	AccessKeyID string
}

// Parse checks a token against the rules the AWS IAM Authenticator
// enforces, without calling STS. The cluster binding is checked by STS
// itself: the verifier sends its own cluster name in the signed
// x-k8s-aws-id header, so a token for another cluster fails the signature.
func Parse(token string, endpoints []Endpoint, now time.Time) (*Parsed, error) {
	if len(token) > MaxTokenBytes {
		return nil, reject("token is %d bytes, more than %d", len(token), MaxTokenBytes)
	}
	if !strings.HasPrefix(token, TokenPrefix) {
		return nil, reject("token does not start with %q", TokenPrefix)
	}
	enc := strings.TrimRight(strings.TrimPrefix(token, TokenPrefix), "=")
	raw, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil {
		return nil, reject("token is not base64url: %v", err)
	}
	u, err := url.Parse(string(raw))
	if err != nil {
		return nil, reject("token is not a URL: %v", err)
	}
	if u.User != nil || u.Fragment != "" || u.Opaque != "" {
		return nil, reject("token URL has user info, a fragment or an opaque part")
	}
	var ep *Endpoint
	for i := range endpoints {
		if strings.EqualFold(endpoints[i].Host, u.Host) {
			ep = &endpoints[i]
			break
		}
	}
	if ep == nil {
		return nil, reject("unexpected STS host %q", u.Host)
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && ep.Insecure:
	default:
		return nil, reject("unexpected scheme %q (https required)", u.Scheme)
	}
	if u.Path != "/" {
		return nil, reject("unexpected path %q", u.Path)
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return nil, reject("malformed query: %v", err)
	}
	seen := map[string]bool{}
	for k, vs := range q {
		lk := strings.ToLower(k)
		if !allowedParams[lk] {
			return nil, reject("query parameter %q is not allowed", k)
		}
		if len(vs) != 1 || seen[lk] {
			return nil, reject("query parameter %q appears more than once", k)
		}
		seen[lk] = true
	}
	get := func(name string) string {
		for k, vs := range q {
			if strings.EqualFold(k, name) {
				return vs[0]
			}
		}
		return ""
	}
	if a := get("Action"); a != "GetCallerIdentity" {
		return nil, reject("action %q is not GetCallerIdentity", a)
	}
	signed := strings.Split(strings.ToLower(get("X-Amz-SignedHeaders")), ";")
	found := false
	for _, h := range signed {
		if h == ClusterIDHeader {
			found = true
		}
	}
	if !found {
		return nil, reject("%s is not a signed header", ClusterIDHeader)
	}
	date := get("X-Amz-Date")
	at, err := time.Parse("20060102T150405Z", date)
	if err != nil {
		return nil, reject("malformed X-Amz-Date %q", date)
	}
	if now.Sub(at) > TokenLifetime {
		return nil, reject("token expired: signed at %s, older than %s", at.Format(time.RFC3339), TokenLifetime)
	}
	if at.Sub(now) > clockSkew {
		return nil, reject("token signed in the future (%s)", at.Format(time.RFC3339))
	}
	if e := get("X-Amz-Expires"); e != "" {
		if n, err := strconv.Atoi(e); err != nil || n <= 0 {
			return nil, reject("malformed X-Amz-Expires %q", e)
		}
	}
	cred := get("X-Amz-Credential")
	akid, _, _ := strings.Cut(cred, "/")
	if akid == "" {
		return nil, reject("missing X-Amz-Credential")
	}
	return &Parsed{URL: u, SignedAt: at, AccessKeyID: akid}, nil
}
