package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"time"

	"github.com/spf13/cobra"
	"github.com/vishvananda/netlink"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/emptypb"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"

	pe "github.com/berth-io/berth/api/policyendpoint/v1alpha1"
	"github.com/berth-io/berth/internal/command"
	"github.com/berth-io/berth/internal/metrics"
	"github.com/berth-io/berth/internal/unixsock"
	"github.com/berth-io/berth/netpol/agent"
	"github.com/berth-io/berth/netpol/datapath"
	"github.com/berth-io/berth/proto/rpc"
)

// DefaultSocket is where the VPC CNI plugin and berth-cni find the agent.
const DefaultSocket = "/var/run/aws-node/npa.sock"

type flags struct {
	kubeconfig, nodeName, ipamdSocket, socket string
	mode, nodeIP, vethPrefix, pinDir          string
	metricsAddr                               string
	conntrackSize                             int
	eventLogs                                 bool
	eventRate                                 int
}

func newRootCommand() *cobra.Command {
	root, logger := command.Root("berth-netpol", "Network-policy agent: NetworkPolicy enforced in eBPF on each pod's veth")
	var f flags
	root.RunE = func(cmd *cobra.Command, _ []string) error {
		return run(cmd.Context(), f, logger())
	}
	fs := root.Flags()
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig of the agent (in-cluster config when empty)")
	fs.StringVar(&f.nodeName, "node-name", os.Getenv("MY_NODE_NAME"), "this node's name (env MY_NODE_NAME)")
	fs.StringVar(&f.ipamdSocket, "ipamd-socket", "/var/run/aws-node/ipamd.sock", "ipamd's socket, asked for the enforcing mode and node IP unless --mode and --node-ip say")
	fs.StringVar(&f.socket, "socket", DefaultSocket, "unix socket of the NPBackend gRPC service (mode 0660)")
	fs.StringVar(&f.mode, "mode", "", "enforcing mode when berth-cni does not say: standard or strict (default: ipamd's NETWORK_POLICY_ENFORCING_MODE)")
	fs.StringVar(&f.nodeIP, "node-ip", "", "the node's IP, always allowed into pods for kubelet probes (default: from ipamd)")
	fs.StringVar(&f.vethPrefix, "veth-prefix", "eni", "prefix of pod host veth names (AWS_VPC_K8S_CNI_VETHPREFIX)")
	fs.StringVar(&f.pinDir, "pin-dir", "/sys/fs/bpf/berth", "bpffs directory of the pinned programs, maps and links")
	fs.StringVar(&f.metricsAddr, "metrics-addr", ":8162", `Prometheus metrics address ("" to disable)`)
	fs.IntVar(&f.conntrackSize, "conntrack-cache-table-size", 256*1024, "entries of the connection-tracking table")
	fs.BoolVar(&f.eventLogs, "enable-policy-event-logs", false, "log every new flow's verdict with the policy rule that decided it")
	fs.IntVar(&f.eventRate, "policy-event-rate", 1000, "verdict log events per second at most (rate-limited in the datapath)")
	return root
}

func run(ctx context.Context, f flags, log *slog.Logger) error {
	if f.nodeName == "" {
		return errors.New("--node-name (or MY_NODE_NAME) is required")
	}
	mode, nodeIP := f.mode, f.nodeIP
	if mode == "" || nodeIP == "" {
		m, ip, err := askIPAMD(ctx, f.ipamdSocket)
		if err != nil {
			return fmt.Errorf("ask ipamd for the enforcing mode and node IP (or pass --mode and --node-ip): %w", err)
		}
		if mode == "" {
			mode = m
		}
		if nodeIP == "" {
			nodeIP = ip
		}
	}
	if mode == "" {
		mode = agent.ModeStandard
	}
	if mode != agent.ModeStandard && mode != agent.ModeStrict {
		return fmt.Errorf("--mode %q: want standard or strict", mode)
	}
	var nodeIPs []netip.Addr
	if nodeIP != "" {
		a, err := netip.ParseAddr(nodeIP)
		if err != nil {
			return fmt.Errorf("--node-ip: %w", err)
		}
		nodeIPs = append(nodeIPs, a)
	}
	restCfg, err := kubeConfig(f.kubeconfig)
	if err != nil {
		return err
	}
	kube, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("dynamic client: %w", err)
	}
	dp, err := datapath.Open(datapath.Config{PinDir: f.pinDir, NodeIPs: nodeIPs, ConntrackSize: f.conntrackSize, Logger: log})
	if err != nil {
		return err
	}
	defer func() { _ = dp.Close() }()

	reg := metrics.NewRegistry("netpol")
	reg.MustRegister(datapathCollector(dp))
	bc := record.NewBroadcaster(record.WithContext(ctx))
	bc.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: kube.CoreV1().Events("")})
	defer bc.Shutdown()
	rec := bc.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "berth-netpol", Host: f.nodeName})

	a := agent.New(agent.Config{NodeName: f.nodeName, Mode: mode, VethPrefix: f.vethPrefix, Kube: kube, Dynamic: dyn,
		Datapath: dp, LinkIndex: linkIndex, LinkName: linkName, Metrics: agent.NewMetrics(reg), Events: events{rec}, Log: log})
	if err := a.Start(ctx); err != nil {
		return err
	}
	if f.eventLogs {
		if err := dp.SetVerdictLog(true, f.eventRate); err != nil {
			return err
		}
		go logVerdicts(ctx, dp, a, log)
	} else if err := dp.SetVerdictLog(false, 0); err != nil {
		return err
	}

	gs := grpc.NewServer()
	rpc.RegisterNPBackendServer(gs, &agent.Server{Agent: a})
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	stop, err := unixsock.ServeGRPC(f.socket, gs, log)
	if err != nil {
		return err
	}
	defer stop()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	if f.metricsAddr != "" {
		if _, err := metrics.Serve(ctx, log, f.metricsAddr, reg); err != nil {
			return err
		}
	}
	log.Info("policy agent ready", "node", f.nodeName, "mode", mode, "socket", f.socket)
	<-ctx.Done()
	log.Info("policy agent stopping; programs stay attached")
	return nil
}

func kubeConfig(path string) (*rest.Config, error) {
	if path == "" {
		c, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster config (or pass --kubeconfig): %w", err)
		}
		return c, nil
	}
	c, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	c.UserAgent = "berth-netpol"
	return c, nil
}

func askIPAMD(ctx context.Context, socket string) (mode, nodeIP string, err error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// Started beside ipamd, which serves a moment later.
	conn, err := unixsock.Dial(socket)
	if err != nil {
		return "", "", err
	}
	defer conn.Close()
	r, err := rpc.NewConfigServerBackendClient(conn).GetNetworkPolicyConfigs(ctx, &emptypb.Empty{}, grpc.WaitForReady(true))
	if err != nil {
		return "", "", err
	}
	return r.NetworkPolicyMode, r.NodeIPv4, nil
}

func linkIndex(name string) (int, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return 0, err
	}
	return l.Attrs().Index, nil
}

func linkName(index int) (string, error) {
	l, err := netlink.LinkByIndex(index)
	if err != nil {
		return "", err
	}
	return l.Attrs().Name, nil
}

// events reports on PolicyEndpoint objects.
type events struct{ rec record.EventRecorder }

func (e events) Warn(obj types.NamespacedName, reason, msg string) {
	e.rec.Event(&corev1.ObjectReference{APIVersion: pe.Group + "/" + pe.Version, Kind: pe.Kind,
		Namespace: obj.Namespace, Name: obj.Name}, corev1.EventTypeWarning, reason, msg)
}
