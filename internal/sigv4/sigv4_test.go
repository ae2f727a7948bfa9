package sigv4

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

type keys map[string]Credentials

func (k keys) Lookup(id string) (Credentials, bool) { c, ok := k[id]; return c, ok }

var (
	root = Credentials{AccessKeyID: "AKIAROOT", SecretAccessKey: "rootsecret", Account: "000000000000", ARN: "arn:aws:iam::000000000000:root"}
	temp = Credentials{AccessKeyID: "ASIATEMP", SecretAccessKey: "tempsecret", SessionToken: "tok123", Account: "000000000000"}
	now  = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
)

func verifier() *Verifier {
	return &Verifier{Keys: keys{root.AccessKeyID: root, temp.AccessKeyID: temp}, Now: func() time.Time { return now }}
}

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// serverSide turns a client request into what a server handler sees.
func serverSide(t *testing.T, r *http.Request) (*http.Request, []byte) {
	t.Helper()
	var body []byte
	if r.Body != nil {
		body, _ = io.ReadAll(r.Body)
	}
	var got *http.Request
	var gotBody []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		gotBody, _ = io.ReadAll(req.Body)
		got = req
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	r2 := r.Clone(context.Background())
	r2.URL.Scheme, r2.URL.Host = u.Scheme, u.Host
	r2.Host = r.Host
	r2.Body = io.NopCloser(bytes.NewReader(body))
	r2.RequestURI = ""
	resp, err := http.DefaultClient.Do(r2)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return got, gotBody
}

func signed(t *testing.T, c Credentials, method, rawURL, service string, body []byte, at time.Time, extra map[string]string) *http.Request {
	t.Helper()
	r, _ := http.NewRequest(method, rawURL, bytes.NewReader(body))
	for k, v := range extra {
		r.Header.Set(k, v)
	}
	if method == http.MethodPost {
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	}
	err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, SessionToken: c.SessionToken},
		r, sha(body), service, "us-west-2", at)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func code(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	if err != nil {
		return "?" + err.Error()
	}
	return ""
}

func TestSDKSignedRequestsVerify(t *testing.T) {
	ec2Body := []byte("Action=DescribeVpcs&Version=2016-11-15&Filter.1.Name=tag%3AName&Filter.1.Value.1=a+b")
	for _, tc := range []struct {
		name, method, url, service string
		creds                      Credentials
		body                       []byte
	}{
		{"ec2 query", http.MethodPost, "http://127.0.0.1:4566/", "ec2", root, ec2Body},
		{"sts temp creds", http.MethodPost, "http://127.0.0.1:4566/", "sts", temp, []byte("Action=GetCallerIdentity&Version=2011-06-15")},
		{"efs rest path", http.MethodGet, "http://127.0.0.1:4566/2015-02-01/access-points/fsap-0123?FileSystemId=fs-1&MaxResults=5", "elasticfilesystem", root, nil},
		{"path needing escapes", http.MethodGet, "http://127.0.0.1:4566/2015-02-01/resource-tags/a%20b:c", "elasticfilesystem", root, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, body := serverSide(t, signed(t, tc.creds, tc.method, tc.url, tc.service, tc.body, now.Add(-time.Minute), nil))
			res, err := verifier().Verify(r, body)
			if err != nil {
				t.Fatalf("verify: %v", err)
			}
			if res.Service != tc.service || res.Region != "us-west-2" || res.Credentials.AccessKeyID != tc.creds.AccessKeyID {
				t.Fatalf("result %+v", res)
			}
		})
	}
}

func TestTamperingIsRejected(t *testing.T) {
	body := []byte("Action=RunInstances&Version=2016-11-15&MaxCount=1")
	good := func() (*http.Request, []byte) {
		return serverSide(t, signed(t, root, http.MethodPost, "http://127.0.0.1:4566/", "ec2", body, now, nil))
	}
	for _, tc := range []struct {
		name   string
		mutate func(r *http.Request, b []byte) (*http.Request, []byte)
		want   string
	}{
		{"body changed", func(r *http.Request, b []byte) (*http.Request, []byte) {
			return r, []byte("Action=RunInstances&Version=2016-11-15&MaxCount=100")
		}, CodeMismatch},
		{"signed header changed", func(r *http.Request, b []byte) (*http.Request, []byte) {
			r.Header.Set("X-Amz-Date", now.Add(time.Second).Format(timeFormat))
			return r, b
		}, CodeMismatch},
		{"host changed", func(r *http.Request, b []byte) (*http.Request, []byte) { r.Host = "evil:4566"; return r, b }, CodeMismatch},
		{"query param added", func(r *http.Request, b []byte) (*http.Request, []byte) {
			r.URL.RawQuery = "Action=TerminateInstances"
			return r, b
		}, CodeMismatch},
		{"unknown key", func(r *http.Request, b []byte) (*http.Request, []byte) {
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), "AKIAROOT", "AKIANOPE", 1))
			return r, b
		}, CodeUnknownKey},
		{"no signature", func(r *http.Request, b []byte) (*http.Request, []byte) { r.Header.Del("Authorization"); return r, b }, CodeMissing},
		{"garbage header", func(r *http.Request, b []byte) (*http.Request, []byte) {
			r.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential")
			return r, b
		}, CodeIncomplete},
		{"bad content sha", func(r *http.Request, b []byte) (*http.Request, []byte) {
			r.Header.Set("X-Amz-Content-Sha256", strings.Repeat("0", 64))
			return r, b
		}, CodeBadContentHash},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, b := good()
			r, b = tc.mutate(r, b)
			if _, err := verifier().Verify(r, b); code(err) != tc.want {
				t.Fatalf("got %v, want %s", err, tc.want)
			}
		})
	}
	t.Run("wrong secret", func(t *testing.T) {
		bad := root
		bad.SecretAccessKey = "guess"
		r, b := serverSide(t, signed(t, bad, http.MethodPost, "http://127.0.0.1:4566/", "ec2", body, now, nil))
		if _, err := verifier().Verify(r, b); code(err) != CodeMismatch {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("skewed clock", func(t *testing.T) {
		r, b := serverSide(t, signed(t, root, http.MethodPost, "http://127.0.0.1:4566/", "ec2", body, now.Add(-20*time.Minute), nil))
		if _, err := verifier().Verify(r, b); code(err) != CodeExpired {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("temporary key without its token", func(t *testing.T) {
		noTok := temp
		noTok.SessionToken = ""
		r, b := serverSide(t, signed(t, noTok, http.MethodPost, "http://127.0.0.1:4566/", "sts", body, now, nil))
		if _, err := verifier().Verify(r, b); code(err) != CodeBadToken {
			t.Fatalf("got %v", err)
		}
	})
}

// presignSTS builds the URL a k8s-aws-v1 token carries.
func presignSTS(t *testing.T, c Credentials, at time.Time, expires string) string {
	t.Helper()
	u := "https://sts.us-west-2.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15&X-Amz-Expires=" + expires
	r, _ := http.NewRequest(http.MethodGet, u, nil)
	r.Header.Set("x-k8s-aws-id", "my-cluster")
	signedURL, _, err := v4.NewSigner().PresignHTTP(context.Background(), aws.Credentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, SessionToken: c.SessionToken},
		r, sha(nil), "sts", "us-west-2", at)
	if err != nil {
		t.Fatal(err)
	}
	return signedURL
}

func presignedRequest(t *testing.T, signedURL, clusterHeader string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, signedURL, nil)
	u, _ := url.Parse(signedURL)
	r.Host = u.Host
	if clusterHeader != "" {
		r.Header.Set("x-k8s-aws-id", clusterHeader)
	}
	return r
}

func TestPresignedURL(t *testing.T) {
	u := presignSTS(t, temp, now.Add(-time.Minute), "900")
	res, err := verifier().Verify(presignedRequest(t, u, "my-cluster"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Presigned || res.Service != "sts" || !strings.Contains(strings.Join(res.SignedHeaders, ";"), "x-k8s-aws-id") {
		t.Fatalf("result %+v", res)
	}
	if _, err := verifier().Verify(presignedRequest(t, u, "other-cluster"), nil); code(err) != CodeMismatch {
		t.Fatalf("other cluster id: %v", err)
	}
	old := presignSTS(t, temp, now.Add(-16*time.Minute), "900")
	if _, err := verifier().Verify(presignedRequest(t, old, "my-cluster"), nil); code(err) != CodeExpired {
		t.Fatalf("expired URL: %v", err)
	}
	tooLong := presignSTS(t, temp, now, "700000")
	if _, err := verifier().Verify(presignedRequest(t, tooLong, "my-cluster"), nil); code(err) != CodeIncomplete {
		t.Fatalf("expires > 7 days: %v", err)
	}
}

// TestAWSCLISignature captures a request the real aws CLI (botocore) signs.
func TestAWSCLISignature(t *testing.T) {
	if _, err := os.Stat("/usr/bin/aws"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("/usr/bin/aws missing (make deps installs awscli)")
		}
		t.Skip("/usr/bin/aws missing")
	}
	results := make(chan error, 4)
	v := &Verifier{Keys: keys{root.AccessKeyID: root}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		_, err := v.Verify(r, body)
		results <- err
		w.WriteHeader(http.StatusBadRequest) // the CLI fails; we only want its signature
		_, _ = w.Write([]byte(`<Response><Errors><Error><Code>Stop</Code><Message>captured</Message></Error></Errors></Response>`))
	}))
	defer srv.Close()
	for _, args := range [][]string{
		{"ec2", "describe-network-interfaces", "--filters", "Name=tag:a b,Values=x*y"},
		{"efs", "describe-access-points", "--file-system-id", "fs-0123"},
	} {
		cmd := exec.Command("/usr/bin/aws", append([]string{"--endpoint-url", srv.URL, "--region", "us-west-2"}, args...)...)
		cmd.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID="+root.AccessKeyID, "AWS_SECRET_ACCESS_KEY="+root.SecretAccessKey,
			"AWS_MAX_ATTEMPTS=1", "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null")
		_ = cmd.Run()
		select {
		case err := <-results:
			if err != nil {
				t.Errorf("aws %s: %v", strings.Join(args[:2], " "), err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("aws %s sent nothing", args[1])
		}
	}
}

func FuzzVerify(f *testing.F) {
	f.Add("AWS4-HMAC-SHA256 Credential=AKIAROOT/20261124/us-west-2/ec2/aws4_request, SignedHeaders=host;x-amz-date, Signature=00", "20261124T120000Z", "/", "Action=X", "")
	f.Add("", "", "/?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=a/b/c/d/aws4_request&X-Amz-Expires=1&X-Amz-SignedHeaders=host&X-Amz-Signature=zz", "", "x")
	f.Fuzz(func(t *testing.T, auth, date, target, body, token string) {
		if !strings.HasPrefix(target, "/") {
			target = "/" + target
		}
		r, err := http.NewRequest(http.MethodPost, "http://h"+target, strings.NewReader(body))
		if err != nil {
			return
		}
		r.Header.Set("Authorization", auth)
		r.Header.Set("X-Amz-Date", date)
		r.Header.Set("X-Amz-Security-Token", token)
		_, err = verifier().Verify(r, []byte(body))
		if err == nil {
			t.Fatal("a fuzzed request verified")
		}
		var e *Error
		if !errors.As(err, &e) || e.HTTPStatus < 400 || e.HTTPStatus >= 500 {
			t.Fatalf("not a client error: %v", err)
		}
	})
}
