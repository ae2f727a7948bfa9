package authn

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"
)

var testNow = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

var endpoints = []Endpoint{{Host: "sts.us-west-2.amazonaws.com"}, {Host: "127.0.0.1:4566", Insecure: true}}

func mkToken(u string) string { return TokenPrefix + base64.RawURLEncoding.EncodeToString([]byte(u)) }

func goodURL(mod func(q string) string) string {
	q := "Action=GetCallerIdentity&Version=2011-06-15&X-Amz-Algorithm=AWS4-HMAC-SHA256" +
		"&X-Amz-Credential=AKIDEXAMPLE%2F20261127%2Fus-west-2%2Fsts%2Faws4_request&X-Amz-Date=20261127T115500Z" +
		"&X-Amz-Expires=900&X-Amz-SignedHeaders=host%3Bx-k8s-aws-id&X-Amz-Signature=abcdef"
	if mod != nil {
		q = mod(q)
	}
	return "https://sts.us-west-2.amazonaws.com/?" + q
}

func TestParseAcceptsWellFormedToken(t *testing.T) {
	p, err := Parse(mkToken(goodURL(nil)), endpoints, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if p.AccessKeyID != "AKIDEXAMPLE" || !p.SignedAt.Equal(time.Date(2026, 11, 27, 11, 55, 0, 0, time.UTC)) {
		t.Fatalf("parsed %+v", p)
	}
	// Padding is tolerated, as the AWS authenticator does.
	if _, err := Parse(mkToken(goodURL(nil))+"==", endpoints, testNow); err != nil {
		t.Fatalf("padded token: %v", err)
	}
	// A local STS over http is allowed only where configured.
	local := strings.Replace(goodURL(nil), "https://sts.us-west-2.amazonaws.com", "http://127.0.0.1:4566", 1)
	if _, err := Parse(mkToken(local), endpoints, testNow); err != nil {
		t.Fatalf("local endpoint: %v", err)
	}
}

func TestParseRejectsForgedTokens(t *testing.T) {
	replace := func(old, new string) func(string) string {
		return func(q string) string { return strings.Replace(q, old, new, 1) }
	}
	cases := map[string]string{
		"wrong host":            strings.Replace(goodURL(nil), "sts.us-west-2.amazonaws.com", "evil.example.com", 1),
		"http to AWS":           strings.Replace(goodURL(nil), "https://", "http://", 1),
		"wrong path":            strings.Replace(goodURL(nil), ".com/?", ".com/x?", 1),
		"extra parameter":       goodURL(func(q string) string { return q + "&Policy=x" }),
		"duplicated parameter":  goodURL(func(q string) string { return q + "&Action=GetCallerIdentity" }),
		"case-duplicated param": goodURL(func(q string) string { return q + "&action=GetCallerIdentity" }),
		"other action":          goodURL(replace("Action=GetCallerIdentity", "Action=AssumeRole")),
		"unsigned cluster id":   goodURL(replace("host%3Bx-k8s-aws-id", "host")),
		"expired":               goodURL(replace("20261127T115500Z", "20261127T114400Z")),
		"future":                goodURL(replace("20261127T115500Z", "20261127T121000Z")),
		"bad date":              goodURL(replace("20261127T115500Z", "yesterday")),
		"user info":             strings.Replace(goodURL(nil), "https://", "https://u:p@", 1),
	}
	for name, u := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Parse(mkToken(u), endpoints, testNow)
			var te *TokenError
			if !errors.As(err, &te) {
				t.Fatalf("accepted or wrong error: %v", err)
			}
		})
	}
	if _, err := Parse(mkToken(goodURL(nil)+"&x="+strings.Repeat("a", MaxTokenBytes)), endpoints, testNow); err == nil || !strings.Contains(err.Error(), "more than 4096") {
		t.Fatalf("oversized: %v", err)
	}
	if _, err := Parse("k8s-aws-v2."+mkToken(goodURL(nil))[len(TokenPrefix):], endpoints, testNow); err == nil {
		t.Fatal("wrong prefix accepted")
	}
	if _, err := Parse(TokenPrefix+"!!!", endpoints, testNow); err == nil {
		t.Fatal("non-base64 accepted")
	}
}

func FuzzParse(f *testing.F) {
	f.Add(mkToken(goodURL(nil)))
	f.Add("k8s-aws-v1.")
	f.Fuzz(func(t *testing.T, tok string) {
		p, err := Parse(tok, endpoints, testNow)
		if err == nil && (p.URL == nil || p.URL.Path != "/") {
			t.Fatalf("accepted %q", tok)
		}
	})
}
