// Package sts is localcloud's AWS Security Token Service (Query protocol):
// GetCallerIdentity, including the presigned-URL form that Kubernetes
// k8s-aws-v1 tokens carry, and AssumeRole.
package sts

import (
	"context"
	"net/http"
	"regexp"
	"time"

	"github.com/berth-io/berth/localcloud/awserr"
	"github.com/berth-io/berth/localcloud/awsquery"
	"github.com/berth-io/berth/localcloud/iam"
)

// Namespace is the XML namespace of STS 2011-06-15.
const Namespace = "https://sts.amazonaws.com/doc/2011-06-15/"

// Request is one STS call by an authenticated caller.
type Request struct {
	Action    string
	Params    awsquery.Params
	Caller    iam.Identity
	RequestID string
}

// Service answers STS calls.
type Service struct {
	iam *iam.Store
}

// New returns the STS service over an identity store.
func New(store *iam.Store) *Service { return &Service{iam: store} }

// Serve runs req and writes the response.
func (s *Service) Serve(ctx context.Context, w http.ResponseWriter, req *Request) {
	body, err := s.handle(ctx, req)
	if err != nil {
		awsquery.WriteQueryError(w, Namespace, req.RequestID, awserr.As(err))
		return
	}
	awsquery.WriteQuery(w, Namespace, req.Action, req.RequestID, body)
}

// WriteError renders an error in STS's format.
func WriteError(w http.ResponseWriter, requestID string, e *awserr.Error) {
	awsquery.WriteQueryError(w, Namespace, requestID, e)
}

func (s *Service) handle(ctx context.Context, req *Request) (any, error) {
	switch req.Action {
	case "GetCallerIdentity":
		return struct {
			Arn     string `xml:"Arn"`
			UserID  string `xml:"UserId"`
			Account string `xml:"Account"`
		}{req.Caller.ARN, req.Caller.UserID, req.Caller.Account}, nil
	case "AssumeRole":
		return s.assumeRole(req)
	}
	return nil, awserr.BadRequest("InvalidAction", "Could not find operation %s for version 2011-06-15", req.Action)
}

var sessionName = regexp.MustCompile(`^[\w+=,.@-]{2,64}$`)

func (s *Service) assumeRole(req *Request) (any, error) {
	arn, err := req.Params.Required("RoleArn")
	if err != nil {
		return nil, err
	}
	session, err := req.Params.Required("RoleSessionName")
	if err != nil {
		return nil, err
	}
	if !sessionName.MatchString(session) {
		return nil, awserr.BadRequest("ValidationError", "1 validation error detected: Value '%s' at 'roleSessionName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]*", session)
	}
	secs, err := req.Params.Int("DurationSeconds", 3600)
	if err != nil {
		return nil, err
	}
	if secs < 900 || secs > 43200 {
		return nil, awserr.BadRequest("ValidationError", "1 validation error detected: Value '%d' at 'durationSeconds' failed to satisfy constraint: Member must have value between 900 and 43200", secs)
	}
	role, err := s.iam.ParseRoleARN(arn)
	if err != nil {
		return nil, awserr.New(http.StatusForbidden, "AccessDenied", "User: %s is not authorized to perform: sts:AssumeRole on resource: %s", req.Caller.ARN, arn)
	}
	k, err := s.iam.Issue(role, session, time.Duration(secs)*time.Second)
	if err != nil {
		return nil, err
	}
	type creds struct {
		AccessKeyID     string `xml:"AccessKeyId"`
		SecretAccessKey string `xml:"SecretAccessKey"`
		SessionToken    string `xml:"SessionToken"`
		Expiration      string `xml:"Expiration"`
	}
	return struct {
		Credentials      creds  `xml:"Credentials"`
		AssumedRoleID    string `xml:"AssumedRoleUser>AssumedRoleId"`
		AssumedRoleARN   string `xml:"AssumedRoleUser>Arn"`
		PackedPolicySize int    `xml:"PackedPolicySize,omitempty"`
	}{
		Credentials:    creds{k.AccessKeyID, k.SecretAccessKey, k.SessionToken, k.Expiration.UTC().Format(time.RFC3339)},
		AssumedRoleID:  k.UserID,
		AssumedRoleARN: k.ARN,
	}, nil
}
