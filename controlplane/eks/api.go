package eks

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/berth-io/berth/controlplane/authn"
	"github.com/berth-io/berth/internal/sigv4"
)

// Policy is an EKS access policy and the Kubernetes ClusterRole that grants
// the same permissions.
type Policy struct {
	Name        string
	ClusterRole string
}

// PolicyARNPrefix prefixes every EKS access policy ARN.
const PolicyARNPrefix = "arn:aws:eks::aws:cluster-access-policy/"

// Policies are the access policies berth implements, by name.
var Policies = map[string]Policy{
	"AmazonEKSClusterAdminPolicy": {Name: "AmazonEKSClusterAdminPolicy", ClusterRole: "cluster-admin"},
	"AmazonEKSAdminPolicy":        {Name: "AmazonEKSAdminPolicy", ClusterRole: "admin"},
	"AmazonEKSEditPolicy":         {Name: "AmazonEKSEditPolicy", ClusterRole: "edit"},
	"AmazonEKSViewPolicy":         {Name: "AmazonEKSViewPolicy", ClusterRole: "view"},
}

// PolicyByARN finds a policy by its ARN.
func PolicyByARN(arn string) (Policy, bool) {
	if !strings.HasPrefix(arn, PolicyARNPrefix) {
		return Policy{}, false
	}
	p, ok := Policies[strings.TrimPrefix(arn, PolicyARNPrefix)]
	return p, ok
}

// newUUID is a random RFC 4122-shaped ID, as EKS uses for updates and
// access entries.
func newUUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	id := hex.EncodeToString(b)
	return id[0:8] + "-" + id[8:12] + "-" + id[12:16] + "-" + id[16:20] + "-" + id[20:]
}

// API serves the EKS REST-JSON API.
type API struct {
	// Creator is the cluster creator's principal ARN, given an access entry
	// when the cluster leaves CONFIG_MAP mode.
	Creator string
	Store   *Store
	Keys    sigv4.KeyStore
	Region  string
	Account string
	Log     *slog.Logger
	Now     func() time.Time
}

type apiError struct {
	status int
	code   string
	msg    string
}

func (e *apiError) Error() string { return e.code + ": " + e.msg }

func invalidParam(format string, args ...any) *apiError {
	return &apiError{http.StatusBadRequest, "InvalidParameterException", fmt.Sprintf(format, args...)}
}

func invalidRequest(format string, args ...any) *apiError {
	return &apiError{http.StatusBadRequest, "InvalidRequestException", fmt.Sprintf(format, args...)}
}

func notFound(format string, args ...any) *apiError {
	return &apiError{http.StatusNotFound, "ResourceNotFoundException", fmt.Sprintf(format, args...)}
}

func inUse(format string, args ...any) *apiError {
	return &apiError{http.StatusConflict, "ResourceInUseException", fmt.Sprintf(format, args...)}
}

func (a *API) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

// ServeHTTP verifies the signature and dispatches to an operation.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		a.fail(w, invalidRequest("read body: %v", err))
		return
	}
	verifier := &sigv4.Verifier{Keys: a.Keys, Now: a.Now}
	res, err := verifier.Verify(r, body)
	if err != nil {
		code, status := "UnrecognizedClientException", http.StatusForbidden
		if se, ok := err.(*sigv4.Error); ok && se.Code != sigv4.CodeUnknownKey {
			code = "InvalidSignatureException"
		}
		if se, ok := err.(*sigv4.Error); ok && se.Code == sigv4.CodeMissing {
			code, status = "MissingAuthenticationTokenException", http.StatusForbidden
		}
		a.fail(w, &apiError{status, code, err.Error()})
		return
	}
	if res.Service != "eks" {
		a.fail(w, &apiError{http.StatusForbidden, "InvalidSignatureException", fmt.Sprintf("credential scope names service %q, not eks", res.Service)})
		return
	}
	out, aerr := a.route(r, body)
	if aerr != nil {
		a.fail(w, aerr)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

func (a *API) fail(w http.ResponseWriter, e *apiError) {
	a.Log.Info("eks api error", "code", e.code, "message", e.msg)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Amzn-Errortype", e.code)
	w.WriteHeader(e.status)
	_ = json.NewEncoder(w).Encode(map[string]string{"message": e.msg})
}

// segments splits the escaped path so an encoded principal ARN (which
// contains '/') stays one segment.
func segments(r *http.Request) ([]string, error) {
	raw := strings.Trim(r.URL.EscapedPath(), "/")
	if raw == "" {
		return nil, nil
	}
	parts := strings.Split(raw, "/")
	for i, p := range parts {
		u, err := url.PathUnescape(p)
		if err != nil {
			return nil, err
		}
		parts[i] = u
	}
	return parts, nil
}

func (a *API) route(r *http.Request, body []byte) (any, *apiError) {
	seg, err := segments(r)
	if err != nil {
		return nil, invalidParam("malformed path: %v", err)
	}
	m := r.Method
	switch {
	case len(seg) == 1 && seg[0] == "clusters" && m == http.MethodGet:
		return a.listClusters(r)
	case len(seg) == 1 && seg[0] == "access-policies" && m == http.MethodGet:
		return a.listAccessPolicies(r)
	case len(seg) == 2 && seg[0] == "clusters" && m == http.MethodGet:
		return a.describeCluster(seg[1])
	case len(seg) == 3 && seg[0] == "clusters" && seg[2] == "update-config" && m == http.MethodPost:
		if err := a.checkCluster(seg[1]); err != nil {
			return nil, err
		}
		return a.updateClusterConfig(body)
	}
	if len(seg) < 3 || seg[0] != "clusters" || seg[2] != "access-entries" {
		return nil, &apiError{http.StatusNotFound, "UnknownOperationException", fmt.Sprintf("no operation for %s %s", m, r.URL.Path)}
	}
	if err := a.checkCluster(seg[1]); err != nil {
		return nil, err
	}
	switch {
	case len(seg) == 3 && m == http.MethodPost:
		return a.createAccessEntry(body)
	case len(seg) == 3 && m == http.MethodGet:
		return a.listAccessEntries(r)
	case len(seg) == 4 && m == http.MethodGet:
		return a.describeAccessEntry(seg[3])
	case len(seg) == 4 && m == http.MethodPost:
		return a.updateAccessEntry(seg[3], body)
	case len(seg) == 4 && m == http.MethodDelete:
		return a.deleteAccessEntry(seg[3])
	case len(seg) == 5 && seg[4] == "access-policies" && m == http.MethodPost:
		return a.associatePolicy(seg[3], body)
	case len(seg) == 5 && seg[4] == "access-policies" && m == http.MethodGet:
		return a.listAssociated(seg[3], r)
	case len(seg) == 6 && seg[4] == "access-policies" && m == http.MethodDelete:
		return a.disassociatePolicy(seg[3], seg[5])
	}
	return nil, &apiError{http.StatusNotFound, "UnknownOperationException", fmt.Sprintf("no operation for %s %s", m, r.URL.Path)}
}

func (a *API) checkCluster(name string) *apiError {
	if name == "" {
		return invalidParam("clusterName is required")
	}
	if a.Store.Cluster().Name != name {
		return notFound("No cluster found for name: %s.", name)
	}
	return nil
}

func epoch(t time.Time) float64 { return float64(t.UnixMilli()) / 1000 }

func (a *API) describeCluster(name string) (any, *apiError) {
	if err := a.checkCluster(name); err != nil {
		return nil, err
	}
	c := a.Store.Cluster()
	types := []string{"api", "audit", "authenticator", "controllerManager", "scheduler"}
	var on, off []string
	for _, t := range types {
		if slices.Contains(c.LogTypes, t) {
			on = append(on, t)
		} else {
			off = append(off, t)
		}
	}
	logging := []map[string]any{}
	if len(on) > 0 {
		logging = append(logging, map[string]any{"types": on, "enabled": true})
	}
	if len(off) > 0 {
		logging = append(logging, map[string]any{"types": off, "enabled": false})
	}
	tags := c.Tags
	if tags == nil {
		tags = map[string]string{}
	}
	return map[string]any{"cluster": map[string]any{
		"name":            c.Name,
		"arn":             c.ARN,
		"createdAt":       epoch(c.CreatedAt),
		"version":         c.Version,
		"endpoint":        c.Endpoint,
		"roleArn":         c.RoleARN,
		"status":          c.Status,
		"platformVersion": c.PlatformVersion,
		"certificateAuthority": map[string]any{
			"data": c.CAData,
		},
		"resourcesVpcConfig": map[string]any{
			"vpcId":                 c.VPCID,
			"subnetIds":             nonNil(c.SubnetIDs),
			"securityGroupIds":      nonNil(c.SecurityGroupIDs),
			"endpointPublicAccess":  true,
			"endpointPrivateAccess": false,
			"publicAccessCidrs":     []string{"0.0.0.0/0"},
		},
		"kubernetesNetworkConfig": map[string]any{
			"serviceIpv4Cidr": c.ServiceIPv4CIDR,
			"ipFamily":        "ipv4",
		},
		"logging":  map[string]any{"clusterLogging": logging},
		"identity": map[string]any{"oidc": map[string]any{"issuer": c.OIDCIssuer}},
		"accessConfig": map[string]any{
			"authenticationMode":                      c.AuthenticationMode,
			"bootstrapClusterCreatorAdminPermissions": c.BootstrapAdmin,
		},
		"tags": tags,
	}}, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// page applies maxResults/nextToken pagination to a sorted list.
func page(r *http.Request, items []string) ([]string, string, *apiError) {
	q := r.URL.Query()
	max := 100
	if s := q.Get("maxResults"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 100 {
			return nil, "", invalidParam("maxResults must be an integer from 1 to 100, got %q", s)
		}
		max = n
	}
	start := 0
	if t := q.Get("nextToken"); t != "" {
		n, err := strconv.Atoi(t)
		if err != nil || n < 0 || n > len(items) {
			return nil, "", invalidParam("The nextToken provided is invalid.")
		}
		start = n
	}
	end := min(start+max, len(items))
	next := ""
	if end < len(items) {
		next = strconv.Itoa(end)
	}
	return items[start:end], next, nil
}

func (a *API) listClusters(r *http.Request) (any, *apiError) {
	items, next, err := page(r, []string{a.Store.Cluster().Name})
	if err != nil {
		return nil, err
	}
	out := map[string]any{"clusters": items}
	if next != "" {
		out["nextToken"] = next
	}
	return out, nil
}

func (a *API) listAccessPolicies(r *http.Request) (any, *apiError) {
	names := make([]string, 0, len(Policies))
	for n := range Policies {
		names = append(names, n)
	}
	sort.Strings(names)
	items, next, err := page(r, names)
	if err != nil {
		return nil, err
	}
	var out []map[string]string
	for _, n := range items {
		out = append(out, map[string]string{"name": n, "arn": PolicyARNPrefix + n})
	}
	res := map[string]any{"accessPolicies": out}
	if next != "" {
		res["nextToken"] = next
	}
	return res, nil
}

var principalRE = regexp.MustCompile(`^arn:aws[a-z-]*:(iam|sts)::[0-9]{12}:(role|user|assumed-role)/[\w+=,.@/-]+$`)

func (a *API) requireAPIMode() *apiError {
	if a.Store.Cluster().AuthenticationMode == authn.ModeConfigMap {
		return invalidRequest("The cluster's authentication mode must be set to one of [API, API_AND_CONFIG_MAP] to perform this operation.")
	}
	return nil
}

type createEntryInput struct {
	PrincipalARN       *string           `json:"principalArn"`
	KubernetesGroups   []string          `json:"kubernetesGroups"`
	Username           *string           `json:"username"`
	Type               *string           `json:"type"`
	Tags               map[string]string `json:"tags"`
	ClientRequestToken string            `json:"clientRequestToken"`
}

func decode(body []byte, v any) *apiError {
	if len(body) == 0 {
		body = []byte("{}")
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return invalidParam("malformed request body: %v", err)
	}
	return nil
}

func validGroups(groups []string) *apiError {
	for _, g := range groups {
		if g == "" {
			return invalidParam("kubernetesGroups must not contain empty names")
		}
		if strings.HasPrefix(g, "system:") {
			return invalidParam("The kubernetes group name %s is invalid, it cannot start with system:", g)
		}
	}
	return nil
}

// entryARN names a new access entry. It reads the store: call it outside
// Store.update.
func (a *API) entryARN(principal string) string {
	c := a.Store.Cluster()
	p := strings.SplitN(principal, ":", 6)
	if len(p) != 6 {
		p = []string{"arn", "aws", "iam", "", a.Account, principal}
	}
	kind, name := "role", p[5]
	if !strings.HasPrefix(name, "role/") {
		kind = "user"
	}
	name = name[strings.LastIndex(name, "/")+1:]
	return fmt.Sprintf("arn:aws:eks:%s:%s:access-entry/%s/%s/%s/%s/%s", a.Region, a.Account, c.Name, kind, p[4], name, newUUID())
}

func (a *API) createAccessEntry(body []byte) (any, *apiError) {
	if err := a.requireAPIMode(); err != nil {
		return nil, err
	}
	var in createEntryInput
	if err := decode(body, &in); err != nil {
		return nil, err
	}
	if in.PrincipalARN == nil || *in.PrincipalARN == "" {
		return nil, invalidParam("principalArn is required")
	}
	principal := *in.PrincipalARN
	if !principalRE.MatchString(principal) || strings.Contains(principal, ":assumed-role/") {
		return nil, invalidParam("The principalArn parameter format is not valid: %s (an IAM role or user ARN)", principal)
	}
	typ := authn.EntryStandard
	if in.Type != nil {
		typ = *in.Type
	}
	switch typ {
	case authn.EntryStandard, authn.EntryEC2Linux, authn.EntryEC2Windows, authn.EntryFargateLinux:
	default:
		return nil, invalidParam("type %q is not one of STANDARD, EC2_LINUX, EC2_WINDOWS, FARGATE_LINUX", typ)
	}
	if typ != authn.EntryStandard && (len(in.KubernetesGroups) > 0 || in.Username != nil) {
		return nil, invalidParam("username and kubernetesGroups can be set only for access entries of type STANDARD")
	}
	if typ != authn.EntryStandard && strings.Contains(principal, ":user/") {
		return nil, invalidParam("access entries of type %s need an IAM role principal", typ)
	}
	if err := validGroups(in.KubernetesGroups); err != nil {
		return nil, err
	}
	username := authn.DefaultUsername(principal, typ)
	if in.Username != nil {
		if *in.Username == "" || strings.HasPrefix(*in.Username, "system:") || strings.HasPrefix(*in.Username, "eks:") || strings.HasPrefix(*in.Username, "aws:") || strings.HasPrefix(*in.Username, "amazon:") {
			return nil, invalidParam("username %q is not valid: it must not be empty or start with system:, eks:, aws: or amazon:", *in.Username)
		}
		username = *in.Username
	}
	now := a.now().UTC()
	arn := a.entryARN(principal)
	var out *AccessEntry
	var aerr *apiError
	err := a.Store.update(func(st *state) error {
		if e, ok := st.Entries[principal]; ok {
			// A retry with the same client token is the same request.
			if in.ClientRequestToken != "" && e.ClientToken == in.ClientRequestToken {
				c := *e
				out = &c
				return nil
			}
			aerr = inUse("The specified access entry resource is already in use on this cluster.")
			return aerr
		}
		e := &AccessEntry{
			PrincipalARN: principal, ARN: arn, Type: typ, Username: username,
			KubernetesGroups: nonNil(in.KubernetesGroups), CreatedAt: now, ModifiedAt: now, Tags: in.Tags,
			ClientToken: in.ClientRequestToken,
		}
		st.Entries[principal] = e
		c := *e
		out = &c
		return nil
	})
	if aerr != nil {
		return nil, aerr
	}
	if err != nil {
		return nil, &apiError{http.StatusInternalServerError, "ServerException", err.Error()}
	}
	return map[string]any{"accessEntry": a.entryJSON(out)}, nil
}

func (a *API) entryJSON(e *AccessEntry) map[string]any {
	tags := e.Tags
	if tags == nil {
		tags = map[string]string{}
	}
	return map[string]any{
		"clusterName":      a.Store.Cluster().Name,
		"principalArn":     e.PrincipalARN,
		"accessEntryArn":   e.ARN,
		"kubernetesGroups": nonNil(e.KubernetesGroups),
		"username":         e.Username,
		"type":             e.Type,
		"createdAt":        epoch(e.CreatedAt),
		"modifiedAt":       epoch(e.ModifiedAt),
		"tags":             tags,
	}
}

func (a *API) getEntry(principal string) (*AccessEntry, *apiError) {
	for _, e := range a.Store.Entries() {
		if e.PrincipalARN == principal {
			return &e, nil
		}
	}
	return nil, notFound("The specified principalArn could not be found. You can view your available access entries with 'list-access-entries'.")
}

func (a *API) describeAccessEntry(principal string) (any, *apiError) {
	if err := a.requireAPIMode(); err != nil {
		return nil, err
	}
	e, err := a.getEntry(principal)
	if err != nil {
		return nil, err
	}
	return map[string]any{"accessEntry": a.entryJSON(e)}, nil
}

func (a *API) listAccessEntries(r *http.Request) (any, *apiError) {
	if err := a.requireAPIMode(); err != nil {
		return nil, err
	}
	filter := r.URL.Query().Get("associatedPolicyArn")
	if filter != "" {
		if _, ok := PolicyByARN(filter); !ok {
			return nil, invalidParam("associatedPolicyArn %q is not an access policy ARN", filter)
		}
	}
	var arns []string
	for _, e := range a.Store.Entries() {
		if filter != "" && !slices.ContainsFunc(e.Policies, func(p Association) bool { return p.PolicyARN == filter }) {
			continue
		}
		arns = append(arns, e.PrincipalARN)
	}
	items, next, err := page(r, arns)
	if err != nil {
		return nil, err
	}
	out := map[string]any{"accessEntries": nonNil(items)}
	if next != "" {
		out["nextToken"] = next
	}
	return out, nil
}

func (a *API) updateAccessEntry(principal string, body []byte) (any, *apiError) {
	if err := a.requireAPIMode(); err != nil {
		return nil, err
	}
	var in struct {
		KubernetesGroups   []string `json:"kubernetesGroups"`
		Username           *string  `json:"username"`
		ClientRequestToken string   `json:"clientRequestToken"`
	}
	if err := decode(body, &in); err != nil {
		return nil, err
	}
	if err := validGroups(in.KubernetesGroups); err != nil {
		return nil, err
	}
	var out AccessEntry
	if aerr := a.mutateEntry(principal, func(st *state, e *AccessEntry) *apiError {
		if e.Type != authn.EntryStandard && (in.KubernetesGroups != nil || in.Username != nil) {
			return invalidParam("username and kubernetesGroups can be changed only for access entries of type STANDARD")
		}
		if in.KubernetesGroups != nil {
			e.KubernetesGroups = in.KubernetesGroups
		}
		if in.Username != nil {
			if *in.Username == "" || strings.HasPrefix(*in.Username, "system:") {
				return invalidParam("username %q is not valid", *in.Username)
			}
			e.Username = *in.Username
		}
		e.ModifiedAt = a.now().UTC()
		out = *e
		return nil
	}); aerr != nil {
		return nil, aerr
	}
	return map[string]any{"accessEntry": a.entryJSON(&out)}, nil
}

func (a *API) deleteAccessEntry(principal string) (any, *apiError) {
	if err := a.requireAPIMode(); err != nil {
		return nil, err
	}
	if aerr := a.mutateEntry(principal, func(st *state, _ *AccessEntry) *apiError {
		delete(st.Entries, principal)
		return nil
	}); aerr != nil {
		return nil, aerr
	}
	return map[string]any{}, nil
}

var namespaceRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

func (a *API) associatePolicy(principal string, body []byte) (any, *apiError) {
	if err := a.requireAPIMode(); err != nil {
		return nil, err
	}
	var in struct {
		PolicyARN   *string `json:"policyArn"`
		AccessScope *struct {
			Type       *string  `json:"type"`
			Namespaces []string `json:"namespaces"`
		} `json:"accessScope"`
	}
	if err := decode(body, &in); err != nil {
		return nil, err
	}
	if in.PolicyARN == nil || *in.PolicyARN == "" {
		return nil, invalidParam("policyArn is required")
	}
	if _, ok := PolicyByARN(*in.PolicyARN); !ok {
		return nil, invalidParam("The policyArn %s is not a valid access policy ARN", *in.PolicyARN)
	}
	if in.AccessScope == nil || in.AccessScope.Type == nil {
		return nil, invalidParam("accessScope with a type is required")
	}
	scope := *in.AccessScope.Type
	switch scope {
	case "cluster":
		if len(in.AccessScope.Namespaces) > 0 {
			return nil, invalidParam("namespaces can be set only for an accessScope of type namespace")
		}
	case "namespace":
		if len(in.AccessScope.Namespaces) == 0 {
			return nil, invalidParam("an accessScope of type namespace needs at least one namespace")
		}
		for _, ns := range in.AccessScope.Namespaces {
			if !namespaceRE.MatchString(ns) || len(ns) > 63 {
				return nil, invalidParam("namespace %q is not a valid Kubernetes namespace name", ns)
			}
		}
	default:
		return nil, invalidParam("accessScope type %q is not cluster or namespace", scope)
	}
	now := a.now().UTC()
	var assoc Association
	if aerr := a.mutateEntry(principal, func(st *state, e *AccessEntry) *apiError {
		if e.Type != authn.EntryStandard {
			return invalidRequest("access policies can be associated only with access entries of type STANDARD")
		}
		assoc = Association{PolicyARN: *in.PolicyARN, ScopeType: scope, Namespaces: slices.Clone(in.AccessScope.Namespaces), AssociatedAt: now, ModifiedAt: now}
		for i, p := range e.Policies {
			if p.PolicyARN == assoc.PolicyARN {
				// Associating again replaces the scope, as on EKS.
				assoc.AssociatedAt = p.AssociatedAt
				e.Policies[i] = assoc
				e.ModifiedAt = now
				return nil
			}
		}
		e.Policies = append(e.Policies, assoc)
		e.ModifiedAt = now
		return nil
	}); aerr != nil {
		return nil, aerr
	}
	return map[string]any{
		"clusterName":            a.Store.Cluster().Name,
		"principalArn":           principal,
		"associatedAccessPolicy": assocJSON(assoc),
	}, nil
}

func assocJSON(p Association) map[string]any {
	return map[string]any{
		"policyArn":    p.PolicyARN,
		"accessScope":  map[string]any{"type": p.ScopeType, "namespaces": nonNil(p.Namespaces)},
		"associatedAt": epoch(p.AssociatedAt),
		"modifiedAt":   epoch(p.ModifiedAt),
	}
}

func (a *API) listAssociated(principal string, r *http.Request) (any, *apiError) {
	if err := a.requireAPIMode(); err != nil {
		return nil, err
	}
	e, aerr := a.getEntry(principal)
	if aerr != nil {
		return nil, aerr
	}
	byARN := map[string]Association{}
	var arns []string
	for _, p := range e.Policies {
		byARN[p.PolicyARN] = p
		arns = append(arns, p.PolicyARN)
	}
	sort.Strings(arns)
	items, next, aerr := page(r, arns)
	if aerr != nil {
		return nil, aerr
	}
	out := []map[string]any{}
	for _, arn := range items {
		out = append(out, assocJSON(byARN[arn]))
	}
	res := map[string]any{"clusterName": a.Store.Cluster().Name, "principalArn": principal, "associatedAccessPolicies": out}
	if next != "" {
		res["nextToken"] = next
	}
	return res, nil
}

func (a *API) disassociatePolicy(principal, policyARN string) (any, *apiError) {
	if err := a.requireAPIMode(); err != nil {
		return nil, err
	}
	if aerr := a.mutateEntry(principal, func(st *state, e *AccessEntry) *apiError {
		i := slices.IndexFunc(e.Policies, func(p Association) bool { return p.PolicyARN == policyARN })
		if i < 0 {
			return notFound("The policy %s is not associated with %s.", policyARN, principal)
		}
		e.Policies = slices.Delete(e.Policies, i, i+1)
		e.ModifiedAt = a.now().UTC()
		return nil
	}); aerr != nil {
		return nil, aerr
	}
	return map[string]any{}, nil
}

// BootstrapCreator gives the cluster creator an access entry with
// AmazonEKSClusterAdminPolicy, once, as EKS does when
// bootstrapClusterCreatorAdminPermissions is true. An entry the user has
// since changed or removed is not recreated on restart.
func (a *API) BootstrapCreator(principal string) error {
	c := a.Store.Cluster()
	if c.CreatorBootstrapped {
		return nil
	}
	now := a.now().UTC()
	arn := a.entryARN(principal)
	return a.Store.update(func(st *state) error {
		if _, ok := st.Entries[principal]; !ok {
			st.Entries[principal] = &AccessEntry{
				PrincipalARN: principal, ARN: arn, Type: authn.EntryStandard,
				Username: authn.DefaultUsername(principal, authn.EntryStandard), KubernetesGroups: []string{},
				CreatedAt: now, ModifiedAt: now,
				Policies: []Association{{PolicyARN: PolicyARNPrefix + "AmazonEKSClusterAdminPolicy", ScopeType: "cluster", AssociatedAt: now, ModifiedAt: now}},
			}
		}
		st.Cluster.CreatorBootstrapped = true
		return nil
	})
}

// mutateEntry runs fn on an existing entry under the store's lock and saves
// the state; an error from fn is returned as is (nothing is saved), a
// failed save as a ServerException.
func (a *API) mutateEntry(principal string, fn func(st *state, e *AccessEntry) *apiError) *apiError {
	var aerr *apiError
	err := a.Store.update(func(st *state) error {
		e, ok := st.Entries[principal]
		if !ok {
			aerr = notFound("The specified principalArn could not be found.")
			return aerr
		}
		if aerr = fn(st, e); aerr != nil {
			return aerr
		}
		return nil
	})
	if aerr != nil {
		return aerr
	}
	if err != nil {
		return &apiError{http.StatusInternalServerError, "ServerException", err.Error()}
	}
	return nil
}

// updateClusterConfig changes the authentication mode, forward only as EKS
// allows. Other settings are fixed at start in berth (flags) and refused.
func (a *API) updateClusterConfig(body []byte) (any, *apiError) {
	var in struct {
		AccessConfig *struct {
			AuthenticationMode *string `json:"authenticationMode"`
		} `json:"accessConfig"`
		ClientRequestToken string          `json:"clientRequestToken"`
		Logging            json.RawMessage `json:"logging"`
		ResourcesVpcConfig json.RawMessage `json:"resourcesVpcConfig"`
	}
	if err := decode(body, &in); err != nil {
		return nil, err
	}
	if in.Logging != nil || in.ResourcesVpcConfig != nil {
		return nil, invalidParam("berth sets logging and VPC configuration when the control plane starts (--log-types); only accessConfig can be updated")
	}
	if in.AccessConfig == nil || in.AccessConfig.AuthenticationMode == nil {
		return nil, invalidParam("accessConfig.authenticationMode is required")
	}
	to := *in.AccessConfig.AuthenticationMode
	if !authn.ValidMode(to) {
		return nil, invalidParam("authenticationMode %q is not one of CONFIG_MAP, API, API_AND_CONFIG_MAP", to)
	}
	from := a.Store.Cluster().AuthenticationMode
	if modeRank(to) <= modeRank(from) {
		return nil, invalidRequest("Unsupported authentication mode update from %s to %s", from, to)
	}
	now := a.now().UTC()
	var saveErr error
	if err := a.Store.update(func(st *state) error {
		st.Cluster.AuthenticationMode = to
		return nil
	}); err != nil {
		saveErr = err
	}
	if saveErr != nil {
		return nil, &apiError{http.StatusInternalServerError, "ServerException", saveErr.Error()}
	}
	// Leaving CONFIG_MAP, the creator's invisible admin becomes an access
	// entry, as on EKS.
	if from == authn.ModeConfigMap && a.Creator != "" && a.Store.Cluster().BootstrapAdmin {
		if err := a.BootstrapCreator(a.Creator); err != nil {
			return nil, &apiError{http.StatusInternalServerError, "ServerException", err.Error()}
		}
	}
	return map[string]any{"update": map[string]any{
		"id":        newUUID(),
		"status":    "Successful",
		"type":      "AccessConfigUpdate",
		"params":    []map[string]string{{"type": "AuthenticationMode", "value": to}},
		"createdAt": epoch(now),
		"errors":    []any{},
	}}, nil
}
