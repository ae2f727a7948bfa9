package e2e

import (
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Controlplane is a berth-controlplane process.
type Controlplane struct {
	DataDir    string
	Kubeconfig string // admin.kubeconfig
	APIServer  string // https://host:port
	EKS        string // http://host:port
	Cluster    string
	Env        []string // AWS environment pointing at localcloud
	// EtcdClient and EtcdPeer are the embedded etcd's addresses.
	EtcdClient, EtcdPeer string
	args                 []string
	cmd                  *exec.Cmd
	exited               chan struct{}
}

// LocalcloudEnv is the environment that points AWS SDKs and the aws CLI
// at lc with its root credentials.
func LocalcloudEnv(lc *Localcloud) []string {
	return []string{
		"AWS_ENDPOINT_URL=" + lc.Endpoint,
		"AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(lc.StateDir, "credentials"),
		"AWS_CONFIG_FILE=" + filepath.Join(lc.StateDir, "config"),
		"AWS_REGION=us-west-2",
		"AWS_EC2_METADATA_DISABLED=true",
	}
}

// StartControlplane runs berth-controlplane serve against lc on free
// loopback ports and waits for admin.kubeconfig; it is stopped when the
// test ends. A --listen among flags sets the apiserver's address instead.
// When another process took one of the ports first, it starts again on new
// ones (the apiserver's on the same host).
func StartControlplane(t testing.TB, lc *Localcloud, dataDir, cluster string, flags ...string) *Controlplane {
	t.Helper()
	cp := &Controlplane{DataDir: dataDir, Cluster: cluster, Kubeconfig: filepath.Join(dataDir, "admin.kubeconfig"), Env: LocalcloudEnv(lc)}
	t.Cleanup(cp.Stop)
	listen, flags := takeFlag(flags, "--listen")
	retryPortRace(t, "berth-controlplane", func() error {
		retry := cp.args != nil
		if retry {
			// A fresh start: the certificates and etcd member of the
			// try before name its ports.
			if err := os.RemoveAll(dataDir); err != nil {
				return err
			}
		}
		api := FreePort(t)
		if host, _, err := net.SplitHostPort(listen); err == nil {
			api = listen
			if retry { // the caller's port was taken
				api = FreePortOn(t, host)
			}
		}
		eks := FreePort(t)
		cp.APIServer, cp.EKS = "https://"+api, "http://"+eks
		cp.EtcdClient, cp.EtcdPeer = FreePort(t), FreePort(t)
		cp.args = append([]string{"serve", "--data-dir", dataDir, "--cluster-name", cluster, "--listen", api, "--eks-listen", eks,
			"--etcd-client-listen", cp.EtcdClient, "--etcd-peer-listen", cp.EtcdPeer}, flags...)
		return cp.start(t)
	})
	return cp
}

// takeFlag removes "name value" or "name=value" from flags and returns
// the (last) value.
func takeFlag(flags []string, name string) (string, []string) {
	var v string
	var rest []string
	for i := 0; i < len(flags); i++ {
		switch {
		case flags[i] == name && i+1 < len(flags):
			v = flags[i+1]
			i++
		case strings.HasPrefix(flags[i], name+"="):
			v = strings.TrimPrefix(flags[i], name+"=")
		default:
			rest = append(rest, flags[i])
		}
	}
	return v, rest
}

// StartWith (re)starts the process with more flags, kept for later
// starts (the last of a repeated flag wins), and waits until ready.
func (c *Controlplane) StartWith(t testing.TB, flags ...string) {
	t.Helper()
	c.args = append(c.args, flags...)
	c.Start(t)
}

// Start (re)starts the process with the same flags and waits until ready.
func (c *Controlplane) Start(t testing.TB) {
	t.Helper()
	if err := c.start(t); err != nil {
		t.Fatal(err)
	}
}

func (c *Controlplane) start(t testing.TB) error {
	_ = os.Remove(c.Kubeconfig)
	c.cmd = exec.Command(Bin(t, "berth-controlplane"), c.args...)
	c.cmd.Env = append(os.Environ(), c.Env...)
	exited, err := startReady(c.cmd, "berth-controlplane", 3*time.Minute, 100*time.Millisecond, func() bool {
		_, err := os.Stat(c.Kubeconfig)
		return err == nil
	})
	if c.exited = exited; exited == nil {
		c.cmd = nil // not started
	}
	return err
}

// Stop ends the process gracefully (SIGINT, SIGKILL after 30s).
func (c *Controlplane) Stop() {
	if c.cmd == nil {
		return
	}
	_ = c.cmd.Process.Signal(os.Interrupt)
	select {
	case <-c.exited:
	case <-time.After(30 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
	c.cmd = nil
}

// Kubectl runs the kubectl built from go.mod's tool line (the same
// Kubernetes version) with the admin kubeconfig unless args set one.
func (c *Controlplane) Kubectl(t testing.TB, args ...string) (string, error) {
	t.Helper()
	return Kubectl(t, c.Kubeconfig, c.Env, args...)
}

// ServiceAccountKubeconfig writes a copy of the admin kubeconfig that
// authenticates with a token of the ServiceAccount namespace/name instead:
// tests run components with exactly the role deploy/rbac gives them.
func (c *Controlplane) ServiceAccountKubeconfig(t testing.TB, namespace, name string) string {
	t.Helper()
	token, err := c.Kubectl(t, "-n", namespace, "create", "token", name, "--duration=2h")
	if err != nil {
		t.Fatalf("token of %s/%s: %v\n%s", namespace, name, err, token)
	}
	kc, err := clientcmd.LoadFromFile(c.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	kc.AuthInfos = map[string]*clientcmdapi.AuthInfo{name: {Token: strings.TrimSpace(token)}}
	for _, ctx := range kc.Contexts {
		ctx.AuthInfo = name
	}
	path := filepath.Join(t.TempDir(), name+".kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// Kubectl runs kubectl with kubeconfig and extra environment.
func Kubectl(t testing.TB, kubeconfig string, env []string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, KubectlBin(t), append([]string{"--kubeconfig", kubeconfig}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// KubectlBin is bin/kubectl, built by make build from go.mod's tool line
// with the Kubernetes version stamped.
func KubectlBin(t testing.TB) string {
	t.Helper()
	return Bin(t, "kubectl")
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// Get fetches url with client and returns the status code.
func Get(client *http.Client, url, bearer string) (int, error) {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}
