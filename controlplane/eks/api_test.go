package eks

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/berth-io/berth/controlplane/authn"
	"github.com/berth-io/berth/internal/sigv4"
)

type keys map[string]sigv4.Credentials

func (k keys) Lookup(id string) (sigv4.Credentials, bool) { c, ok := k[id]; return c, ok }

var creds = aws.Credentials{AccessKeyID: "AKIDTEST", SecretAccessKey: "secret"}

func newAPI(t *testing.T) (*API, *httptest.Server) {
	t.Helper()
	st, err := Open(filepath.Join(t.TempDir(), "state.json"), Cluster{Name: "c1", AuthenticationMode: authn.ModeAPIAndConfigMap, Status: "ACTIVE"})
	if err != nil {
		t.Fatal(err)
	}
	a := &API{Store: st, Keys: keys{"AKIDTEST": {AccessKeyID: "AKIDTEST", SecretAccessKey: "secret"}}, Region: "us-west-2", Account: "111122223333",
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	return a, srv
}

func call(t *testing.T, srv *httptest.Server, method, path, body string) (int, string, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	h := sha256.Sum256([]byte(body))
	req.Header.Set("X-Amz-Content-Sha256", hex.EncodeToString(h[:]))
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, req, hex.EncodeToString(h[:]), "eks", "us-west-2", time.Now()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, resp.Header.Get("X-Amzn-Errortype"), out
}

// Malformed requests get a 4xx with an EKS error type, never a 500.
func TestBadInputIsAClientError(t *testing.T) {
	_, srv := newAPI(t)
	cases := []struct{ method, path, body, code string }{
		{"POST", "/clusters/c1/access-entries", "{not json", "InvalidParameterException"},
		{"POST", "/clusters/c1/access-entries", `{"principalArn": 5}`, "InvalidParameterException"},
		{"POST", "/clusters/c1/access-entries", `{"principalArn": "arn:aws:iam::111122223333:role/R", "bogus": 1}`, "InvalidParameterException"},
		{"POST", "/clusters/c1/access-entries", `{}`, "InvalidParameterException"},
		{"POST", "/clusters/c1/access-entries/arn%3Aaws%3Aiam%3A%3A111122223333%3Arole%2FR/access-policies", `{"policyArn":"x"}`, "InvalidParameterException"},
		{"GET", "/clusters/other/access-entries", "", "ResourceNotFoundException"},
		{"PUT", "/clusters/c1", "", "UnknownOperationException"},
		{"GET", "/nodegroups", "", "UnknownOperationException"},
	}
	for _, c := range cases {
		status, code, body := call(t, srv, c.method, c.path, c.body)
		if status < 400 || status >= 500 || code != c.code || body["message"] == "" {
			t.Errorf("%s %s %q: %d %s %v, want 4xx %s", c.method, c.path, c.body, status, code, body, c.code)
		}
	}
}

func TestConfigMapModeRefusesAccessEntries(t *testing.T) {
	a, srv := newAPI(t)
	a.Store.st.Cluster.AuthenticationMode = authn.ModeConfigMap
	status, code, _ := call(t, srv, "GET", "/clusters/c1/access-entries", "")
	if status != http.StatusBadRequest || code != "InvalidRequestException" {
		t.Fatalf("%d %s", status, code)
	}
}

func TestAccessEntryGroupAndRestartPersistence(t *testing.T) {
	a, srv := newAPI(t)
	p := "arn:aws:iam::111122223333:role/Team"
	if status, code, _ := call(t, srv, "POST", "/clusters/c1/access-entries", `{"principalArn":"`+p+`","kubernetesGroups":["team"]}`); status != 200 {
		t.Fatalf("create: %d %s", status, code)
	}
	e, ok := a.Store.AccessEntry(p)
	if !ok || len(e.KubernetesGroups) != 2 || e.KubernetesGroups[1] != EntryGroup(p) {
		t.Fatalf("entry %+v", e)
	}
	again, err := Open(a.Store.path, Cluster{Name: "c1", AuthenticationMode: authn.ModeAPI})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := again.AccessEntry(p); !ok {
		t.Fatal("entry lost on reopen")
	}
}

// A request that fails half-way changes nothing.
func TestFailedUpdateChangesNothing(t *testing.T) {
	a, srv := newAPI(t)
	p := "arn:aws:iam::111122223333:role/Team"
	call(t, srv, "POST", "/clusters/c1/access-entries", `{"principalArn":"`+p+`","kubernetesGroups":["team"]}`)
	status, _, _ := call(t, srv, "POST", "/clusters/c1/access-entries/arn%3Aaws%3Aiam%3A%3A111122223333%3Arole%2FTeam", `{"kubernetesGroups":["other"],"username":"system:evil"}`)
	if status != http.StatusBadRequest {
		t.Fatalf("status %d", status)
	}
	if e, _ := a.Store.AccessEntry(p); e.KubernetesGroups[0] != "team" {
		t.Fatalf("groups changed by a failed update: %v", e.KubernetesGroups)
	}
}

// The authentication mode moves only forward, as on EKS, and survives a
// restart that passes the original mode again.
func TestUpdateClusterConfigAuthenticationMode(t *testing.T) {
	a, srv := newAPI(t)
	a.Store.st.Cluster.AuthenticationMode = authn.ModeConfigMap
	a.Store.st.Cluster.BootstrapAdmin = true
	a.Creator = "arn:aws:iam::111122223333:role/Creator"
	status, code, out := call(t, srv, "POST", "/clusters/c1/update-config", `{"accessConfig":{"authenticationMode":"API_AND_CONFIG_MAP"}}`)
	if status != 200 || out["update"].(map[string]any)["status"] != "Successful" {
		t.Fatalf("update: %d %s %v", status, code, out)
	}
	if _, ok := a.Store.AccessEntry(a.Creator); !ok {
		t.Fatal("leaving CONFIG_MAP gave the creator no access entry")
	}
	for _, body := range []string{`{"accessConfig":{"authenticationMode":"CONFIG_MAP"}}`, `{"accessConfig":{"authenticationMode":"API_AND_CONFIG_MAP"}}`} {
		if status, code, _ := call(t, srv, "POST", "/clusters/c1/update-config", body); status != 400 || code != "InvalidRequestException" {
			t.Fatalf("backward or same mode %s: %d %s", body, status, code)
		}
	}
	for _, body := range []string{`{"accessConfig":{"authenticationMode":"LDAP"}}`, `{"logging":{"clusterLogging":[]}}`, `{}`} {
		if status, code, _ := call(t, srv, "POST", "/clusters/c1/update-config", body); status != 400 || code != "InvalidParameterException" {
			t.Fatalf("%s: %d %s", body, status, code)
		}
	}
	if status, _, _ := call(t, srv, "POST", "/clusters/c1/update-config", `{"accessConfig":{"authenticationMode":"API"}}`); status != 200 {
		t.Fatal("API_AND_CONFIG_MAP → API refused")
	}
	again, err := Open(a.Store.path, Cluster{Name: "c1", AuthenticationMode: authn.ModeConfigMap})
	if err != nil || again.Cluster().AuthenticationMode != authn.ModeAPI {
		t.Fatalf("mode after reopen: %s %v", again.Cluster().AuthenticationMode, err)
	}
}
