package authn

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	authv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// User is an authenticated Kubernetes user.
type User struct {
	Username string
	UID      string
	Groups   []string
	Extra    map[string][]string
}

// Authenticator verifies tokens and maps identities.
type Authenticator struct {
	ClusterID string
	Endpoints []Endpoint
	// STS sends the presigned requests; its timeout bounds a verify.
	STS *http.Client
	// STSForward, when set, receives every token's request whatever AWS STS
	// host the token names (local mode: localcloud).
	STSForward *url.URL
	Mode       string
	// CurrentMode, when set, is read on every request instead of Mode: the
	// EKS API can change the mode while the cluster runs.
	CurrentMode func() string
	// AWSAuth returns the current aws-auth mapping (nil when absent).
	AWSAuth func() *AWSAuth
	Entries Entries
	EC2     EC2DNS
	// Creator is the canonical ARN of the cluster creator. In CONFIG_MAP
	// mode it maps to kubernetes-admin in system:masters, as EKS maps the
	// creator without an aws-auth entry; in the API modes the creator has
	// an access entry instead and this is empty.
	Creator string
	Log     *slog.Logger
	Now     func() time.Time

	mu    sync.Mutex
	cache map[[32]byte]cached

	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

type cached struct {
	id      *Identity
	expires time.Time
}

// maxCache bounds the identity cache; expired entries go first.
const maxCache = 16384

// Register adds the authenticator's metrics to reg.
func (a *Authenticator) Register(reg prometheus.Registerer) error {
	a.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "berth_authenticator_requests_total",
		Help: "Token reviews by result (success, rejected, unmapped, sts_denied, error).",
	}, []string{"result"})
	a.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "berth_authenticator_verify_seconds",
		Help:    "Token verification latency, by whether the STS answer was cached.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
	}, []string{"cached"})
	for _, c := range []prometheus.Collector{a.requests, a.latency} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

func (a *Authenticator) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

// Verify checks a token and asks STS who signed it, using the cache.
func (a *Authenticator) Verify(ctx context.Context, token string) (*Identity, bool, error) {
	key := sha256.Sum256([]byte(token))
	now := a.now()
	a.mu.Lock()
	if c, ok := a.cache[key]; ok && now.Before(c.expires) {
		a.mu.Unlock()
		return c.id, true, nil
	}
	a.mu.Unlock()
	p, err := Parse(token, a.Endpoints, now)
	if err != nil {
		return nil, false, err
	}
	id, err := callSTS(ctx, a.STS, p, a.ClusterID, a.STSForward)
	if err != nil {
		return nil, false, err
	}
	a.mu.Lock()
	if a.cache == nil {
		a.cache = map[[32]byte]cached{}
	}
	if len(a.cache) >= maxCache {
		for k, c := range a.cache {
			if !now.Before(c.expires) {
				delete(a.cache, k)
			}
		}
		if len(a.cache) >= maxCache {
			clear(a.cache)
		}
	}
	// A token is good until it expires; its identity cannot change before.
	a.cache[key] = cached{id: id, expires: p.SignedAt.Add(TokenLifetime)}
	a.mu.Unlock()
	return id, false, nil
}

// ErrUnmapped is a valid identity with no access entry or aws-auth mapping.
var ErrUnmapped = errors.New("identity is not mapped to a Kubernetes user")

// Authenticate verifies token and maps its identity to a user.
func (a *Authenticator) Authenticate(ctx context.Context, token string) (*User, error) {
	start := time.Now()
	id, hit, err := a.Verify(ctx, token)
	if a.latency != nil {
		a.latency.WithLabelValues(fmt.Sprint(hit)).Observe(time.Since(start).Seconds())
	}
	if err != nil {
		return nil, err
	}
	var auth *AWSAuth
	if a.AWSAuth != nil {
		auth = a.AWSAuth()
	}
	mode := a.Mode
	if a.CurrentMode != nil {
		mode = a.CurrentMode()
	}
	m, ok := lookup(id, mode, a.Entries, auth)
	if !ok && mode == ModeConfigMap && a.Creator != "" && strings.EqualFold(id.CanonicalARN, a.Creator) {
		m, ok = &mapped{username: "kubernetes-admin", groups: []string{"system:masters"}, source: "creator"}, true
	}
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrUnmapped, id.ARN)
	}
	username, err := render(ctx, m.username, id, a.EC2)
	if err != nil {
		return nil, err
	}
	if username == "" {
		return nil, fmt.Errorf("mapping for %s gives an empty username", id.ARN)
	}
	u := &User{
		Username: username,
		UID:      "aws-iam-authenticator:" + id.AccountID + ":" + id.UserID,
		Extra: map[string][]string{
			"arn":          {id.ARN},
			"canonicalArn": {id.CanonicalARN},
			"sessionName":  {id.SessionName},
			"accessKeyId":  {id.AccessKeyID},
			"principalId":  {id.UserID},
		},
	}
	for _, g := range m.groups {
		rg, err := render(ctx, g, id, a.EC2)
		if err != nil {
			return nil, err
		}
		u.Groups = append(u.Groups, rg)
	}
	return u, nil
}

func (a *Authenticator) count(result string) {
	if a.requests != nil {
		a.requests.WithLabelValues(result).Inc()
	}
}

// ServeHTTP answers TokenReview requests of the apiserver's token webhook.
func (a *Authenticator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST a TokenReview", http.StatusMethodNotAllowed)
		return
	}
	var review authv1.TokenReview
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&review); err != nil {
		http.Error(w, "malformed TokenReview: "+err.Error(), http.StatusBadRequest)
		return
	}
	token := review.Spec.Token
	review.Status = authv1.TokenReviewStatus{}
	if !strings.HasPrefix(token, TokenPrefix) {
		// Not ours: another authenticator (certificates, service accounts)
		// may accept it.
		a.writeReview(w, review)
		return
	}
	u, err := a.Authenticate(r.Context(), token)
	if err != nil {
		var te *TokenError
		var de *DeniedError
		result := "error"
		switch {
		case errors.As(err, &te):
			result = "rejected"
		case errors.As(err, &de):
			result = "sts_denied"
		case errors.Is(err, ErrUnmapped):
			result = "unmapped"
		}
		a.count(result)
		// The reason goes to our log, never the token itself.
		a.Log.Info("token rejected", "result", result, "reason", err)
		review.Status.Error = err.Error()
		a.writeReview(w, review)
		return
	}
	a.count("success")
	a.Log.Info("token accepted", "username", u.Username, "arn", u.Extra["arn"][0])
	extra := map[string]authv1.ExtraValue{}
	for k, v := range u.Extra {
		extra[k] = v
	}
	review.Status = authv1.TokenReviewStatus{
		Authenticated: true,
		User:          authv1.UserInfo{Username: u.Username, UID: u.UID, Groups: u.Groups, Extra: extra},
	}
	a.writeReview(w, review)
}

func (a *Authenticator) writeReview(w http.ResponseWriter, review authv1.TokenReview) {
	review.TypeMeta = metav1.TypeMeta{APIVersion: "authentication.k8s.io/v1", Kind: "TokenReview"}
	review.Spec = authv1.TokenReviewSpec{}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(review)
}
