// Package sigv4 verifies AWS Signature Version 4 on incoming requests, in
// both the Authorization-header form that SDKs and the aws CLI send and
// the presigned-URL form that k8s-aws-v1 tokens carry. It is written from
// the SigV4 specification; tests prove it against aws-sdk-go-v2's signer
// and the real aws CLI.
//
//	v := &sigv4.Verifier{Keys: keys}
//	res, err := v.Verify(r, body)
//	if err != nil { /* *sigv4.Error: Code, Message, HTTPStatus */ }
//	_ = res.Service // "ec2", "sts", ... from the credential scope
package sigv4

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

const (
	algorithm  = "AWS4-HMAC-SHA256"
	timeFormat = "20060102T150405Z"
	// UnsignedPayload marks a payload left out of the signature.
	UnsignedPayload = "UNSIGNED-PAYLOAD"
	// maxExpires is the longest a presigned URL may live (7 days).
	maxExpires = 7 * 24 * time.Hour
)

// Error codes. CodeUnknownKey and CodeExpired are families the caller maps
// to its service's wording (AuthFailure for EC2, InvalidClientTokenId for
// STS, UnrecognizedClientException for JSON services; RequestExpired for
// EC2, SignatureDoesNotMatch elsewhere).
const (
	CodeMissing        = "MissingAuthenticationToken"
	CodeIncomplete     = "IncompleteSignature"
	CodeUnknownKey     = "UnknownAccessKey"
	CodeBadToken       = "InvalidClientTokenId"
	CodeMismatch       = "SignatureDoesNotMatch"
	CodeExpired        = "RequestExpired"
	CodeBadContentHash = "XAmzContentSHA256Mismatch"
)

// Error is a verification failure.
type Error struct {
	Code       string
	Message    string
	HTTPStatus int
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

func fail(status int, code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), HTTPStatus: status}
}

// Credentials are a key the verifier knows.
type Credentials struct {
	AccessKeyID     string
	SecretAccessKey string
	// SessionToken is set for temporary credentials; requests must carry it.
	SessionToken string
	Account      string
	ARN          string
}

// KeyStore finds keys by access key ID.
type KeyStore interface {
	Lookup(accessKeyID string) (Credentials, bool)
}

// Verifier checks signatures.
type Verifier struct {
	Keys KeyStore
	// Now is the clock; MaxSkew (default 15 min) bounds the difference
	// between it and a header-signed request's time.
	Now     func() time.Time
	MaxSkew time.Duration
}

// Result describes a verified request.
type Result struct {
	Credentials   Credentials
	Region        string
	Service       string
	SignedHeaders []string
	Presigned     bool
	Time          time.Time
}

// parsed is what a request says about its signature.
type parsed struct {
	accessKey, date, region, service string
	signedHeaders                    []string
	signature                        string
	amzDate                          time.Time
	expires                          time.Duration
	token                            string
	presigned                        bool
}

// Verify checks r (whose body has been read into body).
func (v *Verifier) Verify(r *http.Request, body []byte) (*Result, error) {
	p, err := parse(r)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	if v.Now != nil {
		now = v.Now()
	}
	skew := v.MaxSkew
	if skew == 0 {
		skew = 15 * time.Minute
	}
	creds, ok := v.Keys.Lookup(p.accessKey)
	if !ok {
		return nil, fail(http.StatusForbidden, CodeUnknownKey, "The security token included in the request is invalid: unknown access key %s", p.accessKey)
	}
	if creds.SessionToken != p.token {
		return nil, fail(http.StatusForbidden, CodeBadToken, "The security token included in the request is invalid.")
	}
	if p.presigned {
		if now.After(p.amzDate.Add(p.expires)) {
			return nil, fail(http.StatusForbidden, CodeExpired, "Signature expired: %s is now earlier than %s (%s + %s)",
				p.amzDate.Add(p.expires).Format(timeFormat), now.UTC().Format(timeFormat), p.amzDate.Format(timeFormat), p.expires)
		}
		if p.amzDate.After(now.Add(skew)) {
			return nil, fail(http.StatusForbidden, CodeMismatch, "Signature not yet current: %s is still later than %s",
				p.amzDate.Format(timeFormat), now.Add(skew).UTC().Format(timeFormat))
		}
	} else if d := now.Sub(p.amzDate); d > skew || d < -skew {
		return nil, fail(http.StatusForbidden, CodeExpired, "Signature expired: %s is now earlier than %s (%s - %s.)",
			p.amzDate.Format(timeFormat), now.Add(-skew).UTC().Format(timeFormat), now.UTC().Format(timeFormat), skew)
	}

	hashes, err := payloadHashes(r, body, p.presigned)
	if err != nil {
		return nil, err
	}
	key := signingKey(creds.SecretAccessKey, p.date, p.region, p.service)
	want, err := hex.DecodeString(p.signature)
	if err != nil {
		return nil, fail(http.StatusForbidden, CodeMismatch, "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.")
	}
	for _, h := range hashes {
		creq := canonicalRequest(r, p, h)
		sts := algorithm + "\n" + p.amzDate.Format(timeFormat) + "\n" + scope(p) + "\n" + hexSHA256([]byte(creq))
		if hmac.Equal(hmacSHA256(key, sts), want) {
			return &Result{Credentials: creds, Region: p.region, Service: p.service, SignedHeaders: p.signedHeaders, Presigned: p.presigned, Time: p.amzDate}, nil
		}
	}
	return nil, fail(http.StatusForbidden, CodeMismatch, "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.")
}

func scope(p *parsed) string {
	return p.date + "/" + p.region + "/" + p.service + "/aws4_request"
}

// parse reads the signature parameters from the Authorization header or
// the presigned query string.
func parse(r *http.Request) (*parsed, error) {
	q := r.URL.Query()
	auth := r.Header.Get("Authorization")
	p := &parsed{}
	var credential, signed, dateStr string
	switch {
	case auth != "":
		rest, ok := strings.CutPrefix(auth, algorithm+" ")
		if !ok {
			return nil, fail(http.StatusBadRequest, CodeIncomplete, "Authorization header requires the %s algorithm", algorithm)
		}
		for _, part := range strings.Split(rest, ",") {
			k, val, ok := strings.Cut(strings.TrimSpace(part), "=")
			if !ok {
				return nil, fail(http.StatusBadRequest, CodeIncomplete, "Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' parameters; got %q", part)
			}
			switch k {
			case "Credential":
				credential = val
			case "SignedHeaders":
				signed = val
			case "Signature":
				p.signature = val
			}
		}
		dateStr = r.Header.Get("X-Amz-Date")
		if dateStr == "" {
			dateStr = r.Header.Get("Date")
		}
		p.token = r.Header.Get("X-Amz-Security-Token")
	case q.Get("X-Amz-Algorithm") != "" || q.Get("X-Amz-Signature") != "":
		if q.Get("X-Amz-Algorithm") != algorithm {
			return nil, fail(http.StatusBadRequest, CodeIncomplete, "X-Amz-Algorithm must be %s", algorithm)
		}
		p.presigned = true
		credential, signed, p.signature, dateStr = q.Get("X-Amz-Credential"), q.Get("X-Amz-SignedHeaders"), q.Get("X-Amz-Signature"), q.Get("X-Amz-Date")
		p.token = q.Get("X-Amz-Security-Token")
		exp := q.Get("X-Amz-Expires")
		if exp == "" {
			// STS accepts presigned URLs without X-Amz-Expires (the
			// k8s-aws-v1 tokens of many clients): they live 15 minutes.
			exp = "900"
		}
		secs, err := strconv.Atoi(exp)
		if err != nil || secs < 1 || time.Duration(secs)*time.Second > maxExpires {
			return nil, fail(http.StatusBadRequest, CodeIncomplete, "X-Amz-Expires must be between 1 and 604800 seconds, got %q", exp)
		}
		p.expires = time.Duration(secs) * time.Second
	default:
		return nil, fail(http.StatusForbidden, CodeMissing, "Request is missing Authentication Token")
	}
	if credential == "" || signed == "" || p.signature == "" {
		return nil, fail(http.StatusBadRequest, CodeIncomplete, "Authorization requires 'Credential', 'Signature' and 'SignedHeaders' parameters")
	}
	parts := strings.Split(credential, "/")
	if len(parts) != 5 || parts[4] != "aws4_request" || parts[0] == "" {
		return nil, fail(http.StatusBadRequest, CodeIncomplete, "Credential should be scoped to a valid region and service, in the form <key>/<date>/<region>/<service>/aws4_request; got %q", credential)
	}
	p.accessKey, p.date, p.region, p.service = parts[0], parts[1], parts[2], parts[3]
	t, err := time.Parse(timeFormat, dateStr)
	if err != nil {
		return nil, fail(http.StatusBadRequest, CodeIncomplete, "X-Amz-Date %q is not in the form 20060102T150405Z", dateStr)
	}
	p.amzDate = t
	if t.Format("20060102") != p.date {
		return nil, fail(http.StatusForbidden, CodeMismatch, "Credential should be scoped to the date of the request (%s), not %s", t.Format("20060102"), p.date)
	}
	p.signedHeaders = strings.Split(signed, ";")
	hasHost := false
	for i, h := range p.signedHeaders {
		if h == "" || h != strings.ToLower(h) || (i > 0 && p.signedHeaders[i-1] >= h) {
			return nil, fail(http.StatusBadRequest, CodeIncomplete, "SignedHeaders must be lowercase, sorted and unique: %q", signed)
		}
		hasHost = hasHost || h == "host"
	}
	if !hasHost {
		return nil, fail(http.StatusBadRequest, CodeIncomplete, "SignedHeaders must include host")
	}
	return p, nil
}

// payloadHashes returns the payload hashes to try.
func payloadHashes(r *http.Request, body []byte, presigned bool) ([]string, error) {
	actual := hexSHA256(body)
	if declared := r.Header.Get("X-Amz-Content-Sha256"); declared != "" {
		if declared != UnsignedPayload && declared != actual {
			return nil, fail(http.StatusBadRequest, CodeBadContentHash, "The provided 'x-amz-content-sha256' header does not match what was computed.")
		}
		return []string{declared}, nil
	}
	if presigned {
		// Presigners sign either the (empty) body's hash or UNSIGNED-PAYLOAD.
		return []string{actual, UnsignedPayload}, nil
	}
	return []string{actual}, nil
}

func canonicalRequest(r *http.Request, p *parsed, payloadHash string) string {
	var b strings.Builder
	b.WriteString(r.Method)
	b.WriteByte('\n')
	b.WriteString(canonicalURI(r.URL))
	b.WriteByte('\n')
	b.WriteString(canonicalQuery(r.URL.Query(), p.presigned))
	b.WriteByte('\n')
	for _, h := range p.signedHeaders {
		b.WriteString(h)
		b.WriteByte(':')
		b.WriteString(headerValue(r, h))
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	b.WriteString(strings.Join(p.signedHeaders, ";"))
	b.WriteByte('\n')
	b.WriteString(payloadHash)
	return b.String()
}

// canonicalURI encodes the path as it was sent once more, as SigV4 does
// for every service but S3.
func canonicalURI(u *url.URL) string {
	path := u.EscapedPath()
	if path == "" {
		return "/"
	}
	return uriEncode(path, false)
}

func canonicalQuery(q url.Values, presigned bool) string {
	type kv struct{ k, v string }
	var pairs []kv
	for k, vs := range q {
		if presigned && k == "X-Amz-Signature" {
			continue
		}
		for _, v := range vs {
			pairs = append(pairs, kv{uriEncode(k, true), uriEncode(v, true)})
		}
	}
	sort.Slice(pairs, func(i, j int) bool {
		if pairs[i].k != pairs[j].k {
			return pairs[i].k < pairs[j].k
		}
		return pairs[i].v < pairs[j].v
	})
	parts := make([]string, len(pairs))
	for i, p := range pairs {
		parts[i] = p.k + "=" + p.v
	}
	return strings.Join(parts, "&")
}

func headerValue(r *http.Request, name string) string {
	var vals []string
	switch name {
	case "host":
		vals = []string{r.Host}
	case "content-length":
		if v := r.Header.Values("Content-Length"); len(v) > 0 {
			vals = v
		} else {
			vals = []string{strconv.FormatInt(r.ContentLength, 10)}
		}
	default:
		vals = r.Header.Values(name)
	}
	out := make([]string, len(vals))
	for i, v := range vals {
		out[i] = strings.Join(strings.Fields(v), " ")
	}
	return strings.Join(out, ",")
}

// uriEncode percent-encodes every byte except the unreserved characters
// (and '/' unless encodeSlash).
func uriEncode(s string, encodeSlash bool) string {
	const hexdig = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_', c == '.', c == '~':
			b.WriteByte(c)
		case c == '/' && !encodeSlash:
			b.WriteByte(c)
		default:
			b.WriteByte('%')
			b.WriteByte(hexdig[c>>4])
			b.WriteByte(hexdig[c&15])
		}
	}
	return b.String()
}

func signingKey(secret, date, region, service string) []byte {
	k := hmacSHA256([]byte("AWS4"+secret), date)
	k = hmacSHA256(k, region)
	k = hmacSHA256(k, service)
	return hmacSHA256(k, "aws4_request")
}

func hmacSHA256(key []byte, data string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(data))
	return h.Sum(nil)
}

func hexSHA256(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
