// Package server composes localcloud: one HTTP listener that authenticates
// every request with SigV4, throttles and injects faults, and dispatches to
// EC2 (Query), STS (Query) and EFS (REST-JSON) by the service named in the
// signature's credential scope; plus the admin API under /_localcloud/.
package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/berth-io/berth/internal/sigv4"
	"github.com/berth-io/berth/localcloud/awserr"
	"github.com/berth-io/berth/localcloud/awsquery"
	"github.com/berth-io/berth/localcloud/datapath"
	"github.com/berth-io/berth/localcloud/ec2"
	"github.com/berth-io/berth/localcloud/efs"
	"github.com/berth-io/berth/localcloud/faults"
	"github.com/berth-io/berth/localcloud/iam"
	"github.com/berth-io/berth/localcloud/imds"
	"github.com/berth-io/berth/localcloud/sts"
)

// maxBody bounds a request body; EC2 rejects larger Query requests too.
const maxBody = 10 << 20

// Config configures a localcloud server.
type Config struct {
	StateDir string
	Region   string
	EC2      ec2.Config
	// IMDSLag delays metadata changes as AWS does.
	IMDSLag time.Duration
	// Datapath turns on the VPC-in-a-box datapath (root only).
	Datapath bool
	// RegistryDir overrides where the datapath records what it made.
	RegistryDir string
	// NoEgressNAT leaves VPCs without the NAT gateway that masquerades
	// their traffic leaving the host (see datapath.Config.EgressNAT).
	NoEgressNAT bool
}

// DefaultConfig is us-west-2 with AWS-like latencies.
func DefaultConfig(stateDir string) Config {
	return Config{StateDir: stateDir, Region: "us-west-2", EC2: ec2.DefaultConfig(), IMDSLag: 2 * time.Second}
}

// Server is a running localcloud.
type Server struct {
	cfg      Config
	log      *slog.Logger
	EC2      *ec2.Service
	IAM      *iam.Store
	STS      *sts.Service
	EFS      *efs.Service
	IMDS     *imds.Server
	imdsEnds *imds.Endpoints
	Faults   *faults.Faults
	verifier *sigv4.Verifier
	dp       *datapath.Datapath
}

// New opens (or creates) the state in cfg.StateDir.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Server, error) {
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir %s: %w", cfg.StateDir, err)
	}
	if cfg.EC2.Now == nil {
		cfg.EC2.Now = time.Now
	}
	cfg.EC2.Region = cfg.Region
	s := &Server{cfg: cfg, log: log, Faults: faults.New(cfg.EC2.Now)}
	var err error
	if s.IAM, err = iam.Open(cfg.StateDir, cfg.EC2.Account, cfg.Region, cfg.EC2.Now); err != nil {
		return nil, err
	}
	if s.EC2, err = ec2.New(cfg.EC2, cfg.StateDir, log); err != nil {
		return nil, err
	}
	s.STS = sts.New(s.IAM)
	if s.EFS, err = efs.New(efs.Config{Region: cfg.Region, Account: cfg.EC2.Account, StateDir: cfg.StateDir, Now: cfg.EC2.Now}, subnetLookup{s.EC2}, log); err != nil {
		return nil, err
	}
	s.IMDS = imds.New(imds.Config{Lag: cfg.IMDSLag, Region: cfg.Region}, s.EC2, s.IAM, log)
	s.imdsEnds = imds.NewEndpoints(s.IMDS, log)
	s.verifier = &sigv4.Verifier{Keys: keyStore{s.IAM}, Now: cfg.EC2.Now}
	if cfg.Datapath {
		s.dp, err = datapath.New(datapath.Config{StateDir: cfg.StateDir, RegistryDir: cfg.RegistryDir, IMDS: s.IMDS.Handler, API: s,
			EgressNAT: !cfg.NoEgressNAT}, s.EC2, log)
		if err != nil {
			return nil, err
		}
		s.EC2.SetHooks(s.dp)
	}
	return s, nil
}

// Run serves on ln until ctx ends, then shuts down.
func (s *Server) Run(ctx context.Context, ln net.Listener, more ...net.Listener) error {
	var bg sync.WaitGroup
	bg.Add(2)
	go func() { defer bg.Done(); s.EC2.Run(ctx) }()
	go func() { defer bg.Done(); s.IMDS.Run(ctx) }()
	dpDone := make(chan struct{})
	if s.dp != nil {
		go func() { s.dp.Run(ctx); close(dpDone) }()
	} else {
		close(dpDone)
	}
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
		s.imdsEnds.Close()
	}()
	addrs := []string{ln.Addr().String()}
	// Further listeners (the host address local instances reach) serve the
	// same handler; the first one's end ends Run.
	for _, l := range more {
		addrs = append(addrs, l.Addr().String())
		go func() {
			if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Error("listener stopped", "addr", l.Addr().String(), "err", err)
			}
		}()
	}
	s.log.Info("localcloud serving", "addr", strings.Join(addrs, ","), "state", s.cfg.StateDir, "region", s.cfg.Region)
	err := srv.Serve(ln)
	<-done
	<-dpDone  // every namespace, link and loop device is gone
	bg.Wait() // no state write outlives Run
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

func requestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// ServeHTTP routes one request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/_localcloud/") {
		s.serveAdmin(w, r)
		return
	}
	reqID := requestID()
	w.Header().Set("x-amzn-RequestId", reqID)
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		s.writeError(w, r, "", reqID, awserr.BadRequest("IncompleteBody", "read request body: %v", err))
		return
	}
	if len(body) > maxBody {
		s.writeError(w, r, "", reqID, awserr.New(http.StatusRequestEntityTooLarge, "RequestEntityTooLarge", "Request body exceeds %d bytes", maxBody))
		return
	}
	service := guessService(r, body)
	var caller iam.Identity
	if unsignedSTS(r, body) {
		service = "sts"
	} else {
		res, verr := s.verifier.Verify(r, body)
		if verr != nil {
			s.writeError(w, r, service, reqID, authError(service, verr))
			return
		}
		service = res.Service
		if k, ok := s.IAM.Lookup(res.Credentials.AccessKeyID); ok {
			if !k.Expiration.IsZero() && s.cfg.EC2.Now().After(k.Expiration) {
				s.writeError(w, r, service, reqID, awserr.New(http.StatusBadRequest, "ExpiredToken", "The security token included in the request is expired"))
				return
			}
			caller = iam.Identity{Account: s.IAM.Account(), ARN: k.ARN, UserID: k.UserID}
		}
	}
	switch service {
	case "ec2":
		s.serveEC2(w, r, body, reqID, caller)
	case "sts":
		s.serveSTS(w, r, body, reqID, caller)
	case "elasticfilesystem":
		s.serveEFS(w, r, body, reqID)
	default:
		s.writeError(w, r, service, reqID, awserr.BadRequest("UnknownService", "localcloud does not serve the service %q", service))
	}
}

// guessService names the service for errors before authentication tells.
func guessService(r *http.Request, body []byte) string {
	if strings.HasPrefix(r.URL.Path, "/2015-02-01/") {
		return "elasticfilesystem"
	}
	if cred := r.URL.Query().Get("X-Amz-Credential"); cred != "" {
		if parts := strings.Split(cred, "/"); len(parts) >= 4 {
			return parts[3]
		}
	}
	if auth := r.Header.Get("Authorization"); auth != "" {
		if i := strings.Index(auth, "Credential="); i >= 0 {
			parts := strings.Split(auth[i+len("Credential="):], "/")
			if len(parts) >= 4 {
				return parts[3]
			}
		}
	}
	form, _ := url.ParseQuery(string(body))
	if form.Get("Version") == "2011-06-15" {
		return "sts"
	}
	return "ec2"
}

// unsignedSTS reports the STS calls AWS accepts without a signature.
func unsignedSTS(r *http.Request, body []byte) bool {
	if r.Header.Get("Authorization") != "" || r.URL.Query().Get("X-Amz-Signature") != "" {
		return false
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return false
	}
	a := form.Get("Action")
	if a == "" {
		a = r.URL.Query().Get("Action")
	}
	return a == "AssumeRoleWithWebIdentity" || a == "AssumeRoleWithSAML"
}

// authError maps a signature failure to the code family of the service.
func authError(service string, err error) *awserr.Error {
	var se *sigv4.Error
	if !errors.As(err, &se) {
		return awserr.New(http.StatusForbidden, "IncompleteSignature", "%v", err)
	}
	e := &awserr.Error{Code: se.Code, Message: se.Message, Status: se.HTTPStatus}
	if se.Code == sigv4.CodeUnknownKey {
		switch service {
		case "ec2":
			e.Code, e.Message = "AuthFailure", "AWS was not able to validate the provided access credentials"
		case "sts":
			e.Code, e.Message = "InvalidClientTokenId", "The security token included in the request is invalid."
		default:
			e.Code, e.Message = "UnrecognizedClientException", "The security token included in the request is invalid."
		}
	}
	return e
}

func (s *Server) writeError(w http.ResponseWriter, r *http.Request, service, reqID string, e *awserr.Error) {
	switch service {
	case "sts":
		sts.WriteError(w, reqID, e)
	case "elasticfilesystem":
		s.EFS.WriteError(w, reqID, e)
	default:
		awsquery.WriteEC2Error(w, reqID, e)
	}
}

// before applies faults and throttling; it returns false when it answered.
func (s *Server) before(ctx context.Context, w http.ResponseWriter, r *http.Request, service, op, reqID string, cat faults.Category) bool {
	latency, ferr := s.Faults.Before(service, op, cat)
	if latency > 0 {
		select {
		case <-time.After(latency):
		case <-ctx.Done():
			return false
		}
	}
	if ferr != nil {
		s.writeError(w, r, service, reqID, ferr)
		return false
	}
	return true
}

func queryForm(r *http.Request, body []byte) (url.Values, error) {
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, awserr.BadRequest("MalformedQueryString", "The request body is not valid form encoding: %v", err)
	}
	for k, v := range r.URL.Query() {
		if strings.HasPrefix(k, "X-Amz-") {
			continue
		}
		if _, ok := form[k]; !ok {
			form[k] = v
		}
	}
	return form, nil
}

func (s *Server) serveEC2(w http.ResponseWriter, r *http.Request, body []byte, reqID string, caller iam.Identity) {
	form, err := queryForm(r, body)
	if err != nil {
		awsquery.WriteEC2Error(w, reqID, awserr.As(err))
		return
	}
	action := form.Get("Action")
	if action == "" {
		awsquery.WriteEC2Error(w, reqID, awserr.BadRequest("MissingAction", "The request must contain the parameter Action"))
		return
	}
	params := awsquery.New(form)
	cat := faults.Classify(action, ec2.IsFilteredENIDescribe(params))
	if !s.before(r.Context(), w, r, "ec2", action, reqID, cat) {
		return
	}
	req := &ec2.Request{Action: action, Params: params, Account: caller.Account, CallerARN: caller.ARN, RequestID: reqID}
	resp, err := s.EC2.Handle(r.Context(), req)
	if err != nil {
		e := awserr.As(err)
		if e.Status >= 500 {
			s.log.Error("ec2 internal error", "action", action, "err", err)
		}
		awsquery.WriteEC2Error(w, reqID, e)
		return
	}
	awsquery.WriteEC2(w, action, reqID, resp)
}

func (s *Server) serveSTS(w http.ResponseWriter, r *http.Request, body []byte, reqID string, caller iam.Identity) {
	form, err := queryForm(r, body)
	if err != nil {
		sts.WriteError(w, reqID, awserr.As(err))
		return
	}
	action := form.Get("Action")
	if !s.before(r.Context(), w, r, "sts", action, reqID, "") {
		return
	}
	s.STS.Serve(r.Context(), w, &sts.Request{Action: action, Params: awsquery.New(form), Caller: caller, RequestID: reqID})
}

func (s *Server) serveEFS(w http.ResponseWriter, r *http.Request, body []byte, reqID string) {
	op, oerr := s.EFS.Operation(r)
	if oerr != nil {
		s.EFS.WriteError(w, reqID, oerr)
		return
	}
	if !s.before(r.Context(), w, r, "elasticfilesystem", op, reqID, "") {
		return
	}
	s.EFS.Serve(r.Context(), w, r, op, body, reqID)
}

// keyStore adapts iam.Store to the verifier.
type keyStore struct{ iam *iam.Store }

func (k keyStore) Lookup(id string) (sigv4.Credentials, bool) {
	key, ok := k.iam.Lookup(id)
	if !ok {
		return sigv4.Credentials{}, false
	}
	return sigv4.Credentials{AccessKeyID: key.AccessKeyID, SecretAccessKey: key.SecretAccessKey, SessionToken: key.SessionToken, Account: k.iam.Account(), ARN: key.ARN}, true
}

// subnetLookup adapts ec2 to what EFS needs of subnets.
type subnetLookup struct{ ec2 *ec2.Service }

func (l subnetLookup) Subnet(ctx context.Context, id string) (vpcID, az, cidr string, ok bool) {
	l.ec2.View(ctx, func(st *ec2.State) {
		if sub := st.Subnets[id]; sub != nil {
			vpcID, az, cidr, ok = sub.VPCID, sub.AZ, sub.CIDR, true
		}
	})
	return
}
