package authn

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// Identity is what STS says about a token's signer.
type Identity struct {
	ARN          string // as STS returned it
	CanonicalARN string // role ARN for assumed roles, else ARN
	AccountID    string
	UserID       string
	SessionName  string // assumed-role session name, "" otherwise
	AccessKeyID  string
}

// DeniedError is STS refusing the token: a bad signature (including a
// token made for another cluster), an unknown or expired key.
type DeniedError struct {
	Status int
	Code   string
	Msg    string
}

func (e *DeniedError) Error() string {
	return fmt.Sprintf("sts denied the token (%d %s): %s", e.Status, e.Code, e.Msg)
}

// callSTS sends the presigned request with the cluster header and parses
// the caller identity from the XML or JSON answer.
//
// With forward set, the request goes to that STS instead of the host the
// token names, with the token's Host header kept so its signature still
// verifies: a local control plane sends tokens presigned for AWS's STS
// hosts (the aws CLI's `eks get-token` ignores endpoint settings) to the
// local STS it trusts.
func callSTS(ctx context.Context, client *http.Client, p *Parsed, clusterID string, forward *url.URL) (*Identity, error) {
	target := *p.URL
	if forward != nil {
		target.Scheme, target.Host = forward.Scheme, forward.Host
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("sts request: %w", err)
	}
	req.Host = p.URL.Host
	req.Header.Set(ClusterIDHeader, clusterID)
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("sts: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("sts: read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		code, msg := parseSTSError(body)
		if resp.StatusCode >= 500 {
			return nil, fmt.Errorf("sts: %d %s: %s", resp.StatusCode, code, msg)
		}
		return nil, &DeniedError{Status: resp.StatusCode, Code: code, Msg: msg}
	}
	var r struct {
		Arn, UserId, Account string
	}
	if strings.HasPrefix(strings.TrimSpace(string(body)), "{") {
		var j struct {
			GetCallerIdentityResponse struct {
				GetCallerIdentityResult struct{ Arn, UserId, Account string }
			}
		}
		if err := json.Unmarshal(body, &j); err != nil {
			return nil, fmt.Errorf("sts: malformed answer: %w", err)
		}
		r = j.GetCallerIdentityResponse.GetCallerIdentityResult
	} else {
		var x struct {
			Result struct {
				Arn     string `xml:"Arn"`
				UserId  string `xml:"UserId"`
				Account string `xml:"Account"`
			} `xml:"GetCallerIdentityResult"`
		}
		if err := xml.Unmarshal(body, &x); err != nil {
			return nil, fmt.Errorf("sts: malformed answer: %w", err)
		}
		r.Arn, r.UserId, r.Account = x.Result.Arn, x.Result.UserId, x.Result.Account
	}
	if r.Arn == "" || r.Account == "" {
		return nil, errors.New("sts: answer without Arn or Account")
	}
	id, err := canonicalize(r.Arn)
	if err != nil {
		return nil, err
	}
	id.UserID, id.AccessKeyID = r.UserId, p.AccessKeyID
	if id.AccountID != r.Account {
		return nil, fmt.Errorf("sts: ARN account %s differs from Account %s", id.AccountID, r.Account)
	}
	return id, nil
}

func parseSTSError(body []byte) (code, msg string) {
	var x struct {
		Error struct {
			Code    string `xml:"Code"`
			Message string `xml:"Message"`
		} `xml:"Error"`
	}
	if xml.Unmarshal(body, &x) == nil && x.Error.Code != "" {
		return x.Error.Code, x.Error.Message
	}
	var j struct {
		Error struct{ Code, Message string }
	}
	if json.Unmarshal(body, &j) == nil && j.Error.Code != "" {
		return j.Error.Code, j.Error.Message
	}
	return "Unknown", strings.TrimSpace(string(body[:min(len(body), 200)]))
}

// canonicalize turns an STS caller ARN into the ARN mappings are written
// against: arn:aws:sts::A:assumed-role/R/S becomes arn:aws:iam::A:role/R.
func canonicalize(arn string) (*Identity, error) {
	parts := strings.SplitN(arn, ":", 6)
	if len(parts) != 6 || parts[0] != "arn" || parts[4] == "" {
		return nil, fmt.Errorf("malformed caller ARN %q", arn)
	}
	partition, service, account, resource := parts[1], parts[2], parts[4], parts[5]
	id := &Identity{ARN: arn, AccountID: account}
	switch {
	case service == "sts" && strings.HasPrefix(resource, "assumed-role/"):
		rs := strings.Split(resource, "/")
		if len(rs) != 3 || rs[1] == "" || rs[2] == "" {
			return nil, fmt.Errorf("malformed assumed-role ARN %q", arn)
		}
		id.CanonicalARN = fmt.Sprintf("arn:%s:iam::%s:role/%s", partition, account, rs[1])
		id.SessionName = rs[2]
	case service == "iam" && (strings.HasPrefix(resource, "user/") || strings.HasPrefix(resource, "role/") || resource == "root"):
		id.CanonicalARN = arn
	case service == "sts" && strings.HasPrefix(resource, "federated-user/"):
		id.CanonicalARN = arn
	default:
		return nil, fmt.Errorf("unsupported caller ARN %q", arn)
	}
	return id, nil
}

// CanonicalARN returns the ARN mappings match for a caller ARN.
func CanonicalARN(arn string) (string, error) {
	id, err := canonicalize(arn)
	if err != nil {
		return "", err
	}
	return id.CanonicalARN, nil
}

// stripRolePath drops the path of a role ARN (arn:aws:iam::A:role/p/q/R →
// arn:aws:iam::A:role/R): STS's assumed-role ARNs carry no path, so a
// mapping written with one must still match.
func stripRolePath(arn string) string {
	i := strings.Index(arn, ":role/")
	if i < 0 {
		return arn
	}
	name := arn[i+len(":role/"):]
	if j := strings.LastIndex(name, "/"); j >= 0 {
		name = name[j+1:]
	}
	return arn[:i] + ":role/" + name
}
