package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"
)

// The token is what EKS's authenticator expects: base64url (no padding) of
// a presigned STS GetCallerIdentity URL that signs x-k8s-aws-id.
func TestTokenIsAPresignedGetCallerIdentity(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	t.Setenv("AWS_ENDPOINT_URL", "")
	t.Setenv("AWS_CONFIG_FILE", "/nonexistent")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
	tok, exp, err := presignToken(context.Background(), "prod", "", "", "eu-west-1")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok, "k8s-aws-v1.") || strings.HasSuffix(tok, "=") {
		t.Fatalf("token %q", tok)
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(tok, "k8s-aws-v1."))
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(string(raw))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	if u.Scheme != "https" || u.Host != "sts.eu-west-1.amazonaws.com" || q.Get("Action") != "GetCallerIdentity" ||
		!strings.Contains(q.Get("X-Amz-SignedHeaders"), "x-k8s-aws-id") || !strings.HasPrefix(q.Get("X-Amz-Credential"), "AKIDEXAMPLE/") {
		t.Fatalf("presigned URL %s", u)
	}
	if d := time.Until(exp); d < 13*time.Minute || d > 15*time.Minute {
		t.Fatalf("expiry in %s", d)
	}
	var buf bytes.Buffer
	if err := writeExecCredential(&buf, tok, exp); err != nil {
		t.Fatal(err)
	}
	var cred struct {
		Kind, APIVersion string
		Status           struct{ Token, ExpirationTimestamp string }
	}
	if err := json.Unmarshal(buf.Bytes(), &cred); err != nil || cred.Kind != "ExecCredential" ||
		cred.APIVersion != "client.authentication.k8s.io/v1" || cred.Status.Token != tok || cred.Status.ExpirationTimestamp == "" {
		t.Fatalf("exec credential %s (%v)", buf.String(), err)
	}
}
