// Package userdata reads NodeConfig documents from EC2 user data the way
// EKS AMIs do: MIME multi-part (parts of type application/node.eks.aws, in
// order; shell scripts are cloud-init's), gzip and base64 handled, and
// decodes them strictly: an unknown field or a wrong type names the source,
// the part and the field path, and nothing is accepted half-way.
package userdata

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"reflect"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/berth-io/berth/api/nodeconfig/v1alpha1"
)

// ContentType is the MIME type of NodeConfig parts.
const ContentType = "application/node.eks.aws"

// maxSize bounds user data after decompression (EC2 allows 16 KiB
// compressed; this guards against gzip bombs).
const maxSize = 1 << 20

// Part is one NodeConfig document.
type Part struct {
	Source string // "imds", "file:///etc/eks/nodeconfig.yaml", ...
	Index  int    // 1-based part number within the source
	Body   []byte
}

func (p Part) String() string { return fmt.Sprintf("%s part %d", p.Source, p.Index) }

// Parts extracts the NodeConfig documents of one source.
func Parts(source string, data []byte) ([]Part, error) {
	data, err := unwrap(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return nil, nil
	}
	if isMIME(trimmed) {
		return mimeParts(source, trimmed)
	}
	if bytes.HasPrefix(trimmed, []byte("#!")) || bytes.HasPrefix(trimmed, []byte("#cloud-config")) {
		return nil, nil // for cloud-init
	}
	return []Part{{Source: source, Index: 1, Body: trimmed}}, nil
}

// unwrap undoes base64 and gzip (in either order, once each).
func unwrap(data []byte) ([]byte, error) {
	for i := 0; i < 2; i++ {
		t := bytes.TrimSpace(data)
		if len(t) >= 2 && t[0] == 0x1f && t[1] == 0x8b {
			zr, err := gzip.NewReader(bytes.NewReader(t))
			if err != nil {
				return nil, fmt.Errorf("gzip: %w", err)
			}
			out, err := io.ReadAll(io.LimitReader(zr, maxSize+1))
			if err != nil {
				return nil, fmt.Errorf("gzip: %w", err)
			}
			if len(out) > maxSize {
				return nil, fmt.Errorf("user data larger than %d bytes once decompressed", maxSize)
			}
			data = out
			continue
		}
		if looksBase64(t) {
			dec, err := base64.StdEncoding.DecodeString(string(bytes.Join(bytes.Fields(t), nil)))
			if err == nil && len(dec) > 0 {
				data = dec
				continue
			}
		}
		break
	}
	return data, nil
}

func looksBase64(b []byte) bool {
	if len(b) < 8 {
		return false
	}
	for _, c := range b {
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '+', c == '/', c == '=', c == '\n', c == '\r':
		default:
			return false
		}
	}
	return true
}

func isMIME(b []byte) bool {
	head := strings.ToLower(string(b[:min(len(b), 512)]))
	return strings.HasPrefix(head, "mime-version:") || strings.HasPrefix(head, "content-type: multipart/")
}

func mimeParts(source string, data []byte) ([]Part, error) {
	msg, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("%s: MIME headers: %w", source, err)
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		return nil, fmt.Errorf("%s: Content-Type: %w", source, err)
	}
	if !strings.HasPrefix(mt, "multipart/") {
		return nil, fmt.Errorf("%s: Content-Type %q is not multipart", source, mt)
	}
	r := multipart.NewReader(msg.Body, params["boundary"])
	var out []Part
	for i := 1; ; i++ {
		p, err := r.NextPart()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s part %d: %w", source, i, err)
		}
		pt, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		body, err := io.ReadAll(io.LimitReader(p, maxSize))
		if err != nil {
			return nil, fmt.Errorf("%s part %d: %w", source, i, err)
		}
		if strings.EqualFold(p.Header.Get("Content-Transfer-Encoding"), "base64") {
			if body, err = base64.StdEncoding.DecodeString(string(bytes.Join(bytes.Fields(body), nil))); err != nil {
				return nil, fmt.Errorf("%s part %d: base64: %w", source, i, err)
			}
		}
		if pt != ContentType {
			continue // shell scripts and cloud-config are cloud-init's
		}
		out = append(out, Part{Source: source, Index: i, Body: body})
	}
}

// Decode parses one part strictly.
func Decode(p Part) (*v1alpha1.NodeConfig, error) {
	j, err := yaml.YAMLToJSON(p.Body)
	if err != nil {
		return nil, fmt.Errorf("%s: not YAML: %w", p, err)
	}
	var generic any
	if err := json.Unmarshal(j, &generic); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	if path := unknownField(generic, reflect.TypeOf(v1alpha1.NodeConfig{}), ""); path != "" {
		return nil, fmt.Errorf("%s: unknown field %q", p, path)
	}
	var nc v1alpha1.NodeConfig
	if err := json.Unmarshal(j, &nc); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, fmt.Errorf("%s: field %q: %s is not a %s", p, te.Field, te.Value, te.Type)
		}
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	if nc.APIVersion != v1alpha1.GroupVersion || nc.Kind != v1alpha1.Kind {
		return nil, fmt.Errorf("%s: apiVersion %q kind %q: want %s %s", p, nc.APIVersion, nc.Kind, v1alpha1.GroupVersion, v1alpha1.Kind)
	}
	return &nc, nil
}

// unknownField returns the JSON path of the first key v has that t does
// not declare ("" if none). Free-form maps are not checked.
func unknownField(v any, t reflect.Type, path string) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		obj, ok := v.(map[string]any)
		if !ok {
			return ""
		}
		fields := map[string]reflect.Type{}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" {
				name = f.Name
			}
			fields[name] = f.Type
		}
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			ft, ok := fields[k]
			p := k
			if path != "" {
				p = path + "." + k
			}
			if !ok {
				return p
			}
			if bad := unknownField(obj[k], ft, p); bad != "" {
				return bad
			}
		}
	case reflect.Slice:
		arr, ok := v.([]any)
		if !ok || t.Elem().Kind() == reflect.Uint8 {
			return ""
		}
		for i, e := range arr {
			if bad := unknownField(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); bad != "" {
				return bad
			}
		}
	}
	return ""
}

// Merge combines documents in order: later scalars win, kubelet config
// keys merge (later wins per key), flags append, containerd TOML appends.
func Merge(configs []*v1alpha1.NodeConfig) *v1alpha1.NodeConfig {
	out := &v1alpha1.NodeConfig{APIVersion: v1alpha1.GroupVersion, Kind: v1alpha1.Kind}
	for _, c := range configs {
		s, o := c.Spec, &out.Spec
		if s.Cluster.Name != "" {
			o.Cluster.Name = s.Cluster.Name
		}
		if s.Cluster.APIServerEndpoint != "" {
			o.Cluster.APIServerEndpoint = s.Cluster.APIServerEndpoint
		}
		if len(s.Cluster.CertificateAuthority) > 0 {
			o.Cluster.CertificateAuthority = s.Cluster.CertificateAuthority
		}
		if s.Cluster.CIDR != "" {
			o.Cluster.CIDR = s.Cluster.CIDR
		}
		if s.Cluster.ID != "" {
			o.Cluster.ID = s.Cluster.ID
		}
		for k, v := range s.Kubelet.Config {
			if o.Kubelet.Config == nil {
				o.Kubelet.Config = map[string]json.RawMessage{}
			}
			o.Kubelet.Config[k] = v
		}
		o.Kubelet.Flags = append(o.Kubelet.Flags, s.Kubelet.Flags...)
		if s.Containerd.Config != "" {
			if o.Containerd.Config != "" {
				o.Containerd.Config += "\n"
			}
			o.Containerd.Config += s.Containerd.Config
		}
		if s.Instance.LocalStorage.Strategy != "" {
			o.Instance.LocalStorage.Strategy = s.Instance.LocalStorage.Strategy
		}
	}
	return out
}
