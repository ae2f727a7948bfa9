package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/berth-io/berth/ipamd/config"
)

// followCordon follows the node only for AWS_MANAGE_ENIS_NON_SCHEDULABLE=false
// (the default) and only when it can: with MY_NODE_NAME and the API (a
// kubeconfig, or a pod's environment). Otherwise the pool gets no cordon and
// manages ENIs as with true.
func TestFollowCordonOnlyWhenItCan(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	for _, c := range []struct {
		name       string
		env        map[string]string
		kubeconfig string
	}{
		{"AWS_MANAGE_ENIS_NON_SCHEDULABLE=true", map[string]string{"AWS_MANAGE_ENIS_NON_SCHEDULABLE": "true", "MY_NODE_NAME": "n"}, "/kubeconfig"},
		{"no MY_NODE_NAME", nil, "/kubeconfig"},
		{"no API", map[string]string{"MY_NODE_NAME": "n"}, ""},
	} {
		cfg, err := config.FromEnv(func(k string) string { return c.env[k] })
		if err != nil {
			t.Fatal(err)
		}
		if got := followCordon(context.Background(), cfg, c.kubeconfig, nil, nil, slog.New(slog.DiscardHandler)); got != nil {
			t.Errorf("%s: following the node's cordon", c.name)
		}
	}
	cfg, err := config.FromEnv(func(k string) string { return map[string]string{"MY_NODE_NAME": "n"}[k] })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// An API server that is not there: the first read fails, the node
	// counts as schedulable, and the watch keeps trying in the background.
	kubeconfig := writeKubeconfig(t, "https://127.0.0.1:9")
	c := followCordon(ctx, cfg, kubeconfig, nil, nil, slog.New(slog.DiscardHandler))
	if c == nil || c.Cordoned() {
		t.Fatalf("with MY_NODE_NAME and a kubeconfig: cordon %v", c)
	}
}

func writeKubeconfig(t *testing.T, server string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "kubeconfig")
	kc := "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: " + server + "\n    insecure-skip-tls-verify: true\n" +
		"users:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n"
	if err := os.WriteFile(p, []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
