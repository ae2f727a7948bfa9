// Package nodeconfig is berth-bootstrap's configuration pipeline: resolve
// the sources (IMDS user data, files, a drop-in directory), merge them in
// order, validate everything at once, and explain where each effective
// value came from.
package nodeconfig

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/pelletier/go-toml/v2"

	"github.com/berth-io/berth/api/nodeconfig/v1alpha1"
	"github.com/berth-io/berth/node-bootstrap/userdata"
)

// UserDataFunc fetches the instance's user data (IMDS in production).
type UserDataFunc func(ctx context.Context) ([]byte, error)

// Resolved is the merged configuration and, per field path, the source
// that set it.
type Resolved struct {
	Config  *v1alpha1.NodeConfig
	Sources map[string]string
}

// Resolve reads every source in order: each --config-source ("imds://user-data",
// "file:///path"), then the drop-in directory's *.yaml files sorted by name.
func Resolve(ctx context.Context, sources []string, dropIn string, imds UserDataFunc) (*Resolved, error) {
	if len(sources) == 0 {
		sources = []string{"imds://user-data"}
	}
	var parts []userdata.Part
	for _, src := range sources {
		u, err := url.Parse(src)
		if err != nil {
			return nil, fmt.Errorf("config source %q: %w", src, err)
		}
		var data []byte
		switch u.Scheme {
		case "imds":
			if imds == nil {
				return nil, fmt.Errorf("config source %s: no IMDS client", src)
			}
			if data, err = imds(ctx); err != nil {
				return nil, fmt.Errorf("config source %s: %w", src, err)
			}
		case "file":
			if data, err = os.ReadFile(u.Path); err != nil {
				return nil, fmt.Errorf("config source %s: %w", src, err)
			}
		default:
			return nil, fmt.Errorf("config source %q: want imds://user-data or file:///path", src)
		}
		p, err := userdata.Parts(src, data)
		if err != nil {
			return nil, err
		}
		parts = append(parts, p...)
	}
	if dropIn != "" {
		files, err := filepath.Glob(filepath.Join(dropIn, "*.yaml"))
		if err != nil {
			return nil, fmt.Errorf("drop-in dir %s: %w", dropIn, err)
		}
		sort.Strings(files)
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("drop-in %s: %w", f, err)
			}
			p, err := userdata.Parts("file://"+f, data)
			if err != nil {
				return nil, err
			}
			parts = append(parts, p...)
		}
	}
	if len(parts) == 0 {
		return nil, errors.New("no NodeConfig found in any source (user data needs a part of type application/node.eks.aws)")
	}
	r := &Resolved{Sources: map[string]string{}}
	var docs []*v1alpha1.NodeConfig
	for _, p := range parts {
		nc, err := userdata.Decode(p)
		if err != nil {
			return nil, err
		}
		docs = append(docs, nc)
		track(r.Sources, nc, p.String())
	}
	r.Config = userdata.Merge(docs)
	return r, nil
}

// track records which part set each field (later parts overwrite).
func track(src map[string]string, nc *v1alpha1.NodeConfig, from string) {
	c := nc.Spec.Cluster
	for path, set := range map[string]bool{
		"spec.cluster.name": c.Name != "", "spec.cluster.apiServerEndpoint": c.APIServerEndpoint != "",
		"spec.cluster.certificateAuthority": len(c.CertificateAuthority) > 0, "spec.cluster.cidr": c.CIDR != "",
		"spec.containerd.config": nc.Spec.Containerd.Config != "", "spec.instance.localStorage.strategy": nc.Spec.Instance.LocalStorage.Strategy != "",
	} {
		if set {
			src[path] = from
		}
	}
	for k := range nc.Spec.Kubelet.Config {
		src["spec.kubelet.config."+k] = from
	}
	if len(nc.Spec.Kubelet.Flags) > 0 {
		if prev := src["spec.kubelet.flags"]; prev != "" {
			from = prev + ", " + from
		}
		src["spec.kubelet.flags"] = from
	}
}

// Validate returns every problem of a merged configuration.
func Validate(nc *v1alpha1.NodeConfig) error {
	var errs []error
	c := nc.Spec.Cluster
	if c.Name == "" {
		errs = append(errs, errors.New("spec.cluster.name: required"))
	}
	if c.APIServerEndpoint == "" {
		errs = append(errs, errors.New("spec.cluster.apiServerEndpoint: required"))
	} else if u, err := url.Parse(c.APIServerEndpoint); err != nil || u.Scheme != "https" || u.Host == "" {
		errs = append(errs, fmt.Errorf("spec.cluster.apiServerEndpoint: %q is not an https URL", c.APIServerEndpoint))
	}
	if len(c.CertificateAuthority) == 0 {
		errs = append(errs, errors.New("spec.cluster.certificateAuthority: required"))
	} else if block, _ := pem.Decode(c.CertificateAuthority); block == nil {
		errs = append(errs, errors.New("spec.cluster.certificateAuthority: not a PEM certificate"))
	} else if _, err := x509.ParseCertificate(block.Bytes); err != nil {
		errs = append(errs, fmt.Errorf("spec.cluster.certificateAuthority: %w", err))
	}
	if c.CIDR == "" {
		errs = append(errs, errors.New("spec.cluster.cidr: required (the service CIDR; cluster DNS is derived from it)"))
	} else if _, err := netip.ParsePrefix(c.CIDR); err != nil {
		errs = append(errs, fmt.Errorf("spec.cluster.cidr: %w", err))
	}
	switch nc.Spec.Instance.LocalStorage.Strategy {
	case "", "RAID0", "RAID10", "Mount":
	default:
		errs = append(errs, fmt.Errorf("spec.instance.localStorage.strategy: %q: want RAID0, RAID10 or Mount", nc.Spec.Instance.LocalStorage.Strategy))
	}
	if raw, ok := nc.Spec.Kubelet.Config["maxPods"]; ok {
		var n int
		if err := json.Unmarshal(raw, &n); err != nil || n < 1 {
			errs = append(errs, fmt.Errorf("spec.kubelet.config.maxPods: %s is not a positive integer", raw))
		}
	}
	if c := nc.Spec.Containerd.Config; c != "" {
		var m map[string]any
		if err := toml.Unmarshal([]byte(c), &m); err != nil {
			var de *toml.DecodeError
			if errors.As(err, &de) {
				row, col := de.Position()
				err = fmt.Errorf("line %d column %d: %w", row, col, err)
			}
			errs = append(errs, fmt.Errorf("spec.containerd.config: %w", err))
		}
	}
	for _, f := range nc.Spec.Kubelet.Flags {
		if !strings.HasPrefix(f, "--") {
			errs = append(errs, fmt.Errorf("spec.kubelet.flags: %q does not start with --", f))
		}
	}
	return errors.Join(errs...)
}

// ExplicitMaxPods returns kubelet.config.maxPods, or 0.
func ExplicitMaxPods(nc *v1alpha1.NodeConfig) int {
	var n int
	if raw, ok := nc.Spec.Kubelet.Config["maxPods"]; ok {
		_ = json.Unmarshal(raw, &n)
	}
	return n
}
