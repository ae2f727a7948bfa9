package authn

import (
	"context"
	"fmt"
	"strings"

	"sigs.k8s.io/yaml"
)

// Authentication modes, as EKS names them.
const (
	ModeConfigMap       = "CONFIG_MAP"
	ModeAPI             = "API"
	ModeAPIAndConfigMap = "API_AND_CONFIG_MAP"
)

// ValidMode reports whether m is an EKS authentication mode.
func ValidMode(m string) bool {
	return m == ModeConfigMap || m == ModeAPI || m == ModeAPIAndConfigMap
}

// RoleMapping is an entry of aws-auth mapRoles.
type RoleMapping struct {
	RoleARN  string   `json:"rolearn"`
	Username string   `json:"username"`
	Groups   []string `json:"groups,omitempty"`
}

// UserMapping is an entry of aws-auth mapUsers.
type UserMapping struct {
	UserARN  string   `json:"userarn"`
	Username string   `json:"username"`
	Groups   []string `json:"groups,omitempty"`
}

// AWSAuth is the parsed kube-system/aws-auth ConfigMap.
type AWSAuth struct {
	Roles    []RoleMapping
	Users    []UserMapping
	Accounts []string
}

// ParseAWSAuth parses the data of an aws-auth ConfigMap. An entry without
// an ARN is an error naming it, so a typo does not silently lock users out.
func ParseAWSAuth(data map[string]string) (*AWSAuth, error) {
	var a AWSAuth
	if s := data["mapRoles"]; strings.TrimSpace(s) != "" {
		if err := yaml.UnmarshalStrict([]byte(s), &a.Roles); err != nil {
			return nil, fmt.Errorf("aws-auth mapRoles: %w", err)
		}
	}
	if s := data["mapUsers"]; strings.TrimSpace(s) != "" {
		if err := yaml.UnmarshalStrict([]byte(s), &a.Users); err != nil {
			return nil, fmt.Errorf("aws-auth mapUsers: %w", err)
		}
	}
	if s := data["mapAccounts"]; strings.TrimSpace(s) != "" {
		if err := yaml.UnmarshalStrict([]byte(s), &a.Accounts); err != nil {
			return nil, fmt.Errorf("aws-auth mapAccounts: %w", err)
		}
	}
	for i, r := range a.Roles {
		if r.RoleARN == "" {
			return nil, fmt.Errorf("aws-auth mapRoles[%d]: rolearn is required", i)
		}
	}
	for i, u := range a.Users {
		if u.UserARN == "" {
			return nil, fmt.Errorf("aws-auth mapUsers[%d]: userarn is required", i)
		}
	}
	return &a, nil
}

// Access entry types, as EKS names them.
const (
	EntryStandard     = "STANDARD"
	EntryEC2Linux     = "EC2_LINUX"
	EntryEC2Windows   = "EC2_WINDOWS"
	EntryFargateLinux = "FARGATE_LINUX"
)

// Entry is an access entry as the authenticator needs it.
type Entry struct {
	PrincipalARN     string
	Type             string
	Username         string
	KubernetesGroups []string
}

// DefaultUsername is the username EKS gives an access entry created
// without one.
func DefaultUsername(principalARN, typ string) string {
	switch typ {
	case EntryEC2Linux, EntryEC2Windows:
		return "system:node:{{EC2PrivateDNSName}}"
	case EntryFargateLinux:
		return "system:node:{{SessionName}}"
	}
	// arn:aws:iam::A:role/path/R → arn:aws:sts::A:assumed-role/R/{{SessionName}}
	if p := strings.SplitN(principalARN, ":", 6); len(p) == 6 && strings.HasPrefix(p[5], "role/") {
		name := p[5][strings.LastIndex(p[5], "/")+1:]
		return fmt.Sprintf("arn:%s:sts::%s:assumed-role/%s/{{SessionName}}", p[1], p[4], name)
	}
	return principalARN
}

// EntryGroups are the groups EKS adds for an entry type.
func EntryGroups(typ string) []string {
	switch typ {
	case EntryEC2Linux, EntryEC2Windows, EntryFargateLinux:
		return []string{"system:nodes"}
	}
	return nil
}

// Entries finds access entries by principal ARN.
type Entries interface {
	AccessEntry(principalARN string) (Entry, bool)
}

// mapped is the mapping chosen for an identity, before templates.
type mapped struct {
	username string
	groups   []string
	source   string
}

func lookup(id *Identity, mode string, entries Entries, auth *AWSAuth) (*mapped, bool) {
	if mode != ModeConfigMap && entries != nil {
		for _, arn := range []string{id.CanonicalARN, id.ARN} {
			if e, ok := entries.AccessEntry(arn); ok {
				u := e.Username
				if u == "" {
					u = DefaultUsername(e.PrincipalARN, e.Type)
				}
				groups := append(EntryGroups(e.Type), e.KubernetesGroups...)
				return &mapped{username: u, groups: groups, source: "access-entry"}, true
			}
		}
	}
	if mode != ModeAPI && auth != nil {
		canon := strings.ToLower(id.CanonicalARN)
		for _, r := range auth.Roles {
			if strings.ToLower(stripRolePath(r.RoleARN)) == canon {
				return &mapped{username: r.Username, groups: r.Groups, source: "aws-auth"}, true
			}
		}
		for _, u := range auth.Users {
			if strings.ToLower(u.UserARN) == strings.ToLower(id.ARN) {
				return &mapped{username: u.Username, groups: u.Groups, source: "aws-auth"}, true
			}
		}
		for _, a := range auth.Accounts {
			if a == id.AccountID {
				return &mapped{username: id.ARN, source: "aws-auth"}, true
			}
		}
	}
	return nil, false
}

// EC2DNS resolves an instance ID to its private DNS name.
type EC2DNS func(ctx context.Context, instanceID string) (string, error)

// render fills the templates EKS supports in usernames and groups.
func render(ctx context.Context, s string, id *Identity, ec2 EC2DNS) (string, error) {
	if !strings.Contains(s, "{{") {
		return s, nil
	}
	r := strings.NewReplacer(
		"{{AccountID}}", id.AccountID,
		"{{SessionName}}", strings.ReplaceAll(id.SessionName, "@", "-"),
		"{{SessionNameRaw}}", id.SessionName,
		"{{AccessKeyID}}", id.AccessKeyID,
	)
	out := r.Replace(s)
	if strings.Contains(out, "{{EC2PrivateDNSName}}") {
		if !strings.HasPrefix(id.SessionName, "i-") {
			return "", fmt.Errorf("{{EC2PrivateDNSName}} needs an EC2 instance session, got session %q", id.SessionName)
		}
		if ec2 == nil {
			return "", fmt.Errorf("{{EC2PrivateDNSName}}: no EC2 access configured")
		}
		dns, err := ec2(ctx, id.SessionName)
		if err != nil {
			return "", fmt.Errorf("{{EC2PrivateDNSName}} of %s: %w", id.SessionName, err)
		}
		out = strings.ReplaceAll(out, "{{EC2PrivateDNSName}}", dns)
	}
	if strings.Contains(out, "{{") {
		return "", fmt.Errorf("unknown template in %q", s)
	}
	return out, nil
}
