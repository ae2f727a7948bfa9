package main

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	kubeversion "k8s.io/component-base/version"

	"github.com/berth-io/berth/controlplane/authn"
	"github.com/berth-io/berth/controlplane/etcd"
	"github.com/berth-io/berth/controlplane/netpolicy"
	"github.com/berth-io/berth/controlplane/server"
	"github.com/berth-io/berth/deploy/addons"
	"github.com/berth-io/berth/internal/command"
)

func newRootCommand() *cobra.Command {
	root, logger := command.Root("berth-controlplane", "berth-controlplane: a slim EKS-compatible Kubernetes control plane in one process")
	root.AddCommand(newServeCommand(logger), newEtcdCommand(), newNetpolCommand(logger))
	return root
}

// kubernetesVersion is the EKS-style minor version ("1.37") of the
// Kubernetes libraries linked in.
func kubernetesVersion() string {
	v := kubeversion.Get()
	if v.Major != "" && v.Minor != "" {
		return v.Major + "." + strings.TrimSuffix(v.Minor, "+")
	}
	return "1.37"
}

func newServeCommand(logger func() *slog.Logger) *cobra.Command {
	cfg := server.Config{}
	var etcdServers string
	cmd := &cobra.Command{
		Use:   "serve --data-dir DIR --cluster-name NAME",
		Short: "Run the control plane until interrupted",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if etcdServers != "" {
				cfg.EtcdServers = strings.Split(etcdServers, ",")
			}
			if len(cfg.STSEndpoints) == 0 {
				if e := firstEnv("AWS_ENDPOINT_URL_STS", "AWS_ENDPOINT_URL"); e != "" {
					cfg.STSEndpoints = []string{e}
				}
			}
			if cfg.Region == "" {
				cfg.Region = firstEnv("AWS_REGION", "AWS_DEFAULT_REGION")
			}
			if cfg.Region == "" {
				cfg.Region = "us-west-2"
			}
			cfg.KubernetesVersion = kubernetesVersion()
			s, err := server.New(cfg, logger())
			if err != nil {
				return err
			}
			return s.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", "", "directory for etcd, PKI, kubeconfigs and EKS state (created 0700)")
	f.StringVar(&cfg.ClusterName, "cluster-name", "", "cluster name (the x-k8s-aws-id tokens must be signed for)")
	f.StringVar(&cfg.Listen, "listen", "127.0.0.1:6443", "kube-apiserver address")
	f.StringVar(&cfg.AdvertiseAddress, "advertise-address", "", "IP of the kubernetes Service endpoint (default: listen IP, or the first non-loopback IP)")
	f.StringVar(&cfg.EKSListen, "eks-listen", "127.0.0.1:4567", "EKS management API address (HTTP, SigV4-signed)")
	f.StringVar(&cfg.EKSCredentialsFile, "eks-credentials-file", "", "AWS shared-credentials file whose keys may sign EKS API calls (default: $AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials)")
	f.StringVar(&cfg.MetricsAddr, "metrics-addr", "", "address for berth's own Prometheus metrics (kube metrics are on the apiserver's /metrics)")
	f.StringVar(&etcdServers, "etcd-servers", "", "comma-separated external etcd URLs; empty embeds etcd in the data dir")
	f.StringVar(&cfg.EtcdCAFile, "etcd-cafile", "", "CA of the external etcd servers")
	f.StringVar(&cfg.EtcdCertFile, "etcd-certfile", "", "client certificate for the external etcd")
	f.StringVar(&cfg.EtcdKeyFile, "etcd-keyfile", "", "client key for the external etcd")
	f.StringVar(&cfg.EtcdClientAddr, "etcd-client-listen", "127.0.0.1:2379", "embedded etcd client address (loopback, TLS)")
	f.StringVar(&cfg.EtcdPeerAddr, "etcd-peer-listen", "127.0.0.1:2380", "embedded etcd peer address (loopback, TLS)")
	f.StringVar(&cfg.Region, "region", "", "AWS region (default $AWS_REGION, else us-west-2)")
	f.StringVar(&cfg.AuthenticationMode, "authentication-mode", authn.ModeAPIAndConfigMap, "CONFIG_MAP, API or API_AND_CONFIG_MAP, as EKS")
	f.BoolVar(&cfg.BootstrapCreatorAdmin, "bootstrap-cluster-creator-admin", true, "give the creator (the caller identity of this process, or --cluster-creator-arn) an access entry with AmazonEKSClusterAdminPolicy")
	f.StringVar(&cfg.CreatorARN, "cluster-creator-arn", "", "IAM principal ARN of the cluster creator (default: STS GetCallerIdentity)")
	f.StringArrayVar(&cfg.STSEndpoints, "sts-endpoint", nil, "extra STS endpoint tokens may be presigned for, repeatable (default $AWS_ENDPOINT_URL_STS or $AWS_ENDPOINT_URL); http is accepted only for these; tokens for AWS's STS hosts are verified at the first")
	f.StringVar(&cfg.ServiceCIDR, "service-cidr", "10.100.0.0/16", "Service IPv4 CIDR (EKS default)")
	f.StringVar(&cfg.ServiceIssuer, "service-account-issuer", "", "service-account token issuer URL (default https://kubernetes.default.svc)")
	f.StringSliceVar(&cfg.LogTypes, "log-types", nil, "control-plane log types to enable: api, audit, authenticator, controllerManager, scheduler")
	f.BoolVar(&cfg.LeaderElect, "leader-elect", false, "controller manager, scheduler and network policy controller take a lease (set for several replicas over one external etcd)")
	f.BoolVar(&cfg.NetworkPolicyController, "network-policy-controller", true, "install the PolicyEndpoint CRD and run the NetworkPolicy → PolicyEndpoint controller")
	f.BoolVar(&cfg.CloudNodeController, "cloud-node-controller", true, "initialize Nodes from EC2 (instance type, zone, addresses; lifts the uninitialized taint) and delete those of terminated instances, as the AWS cloud controller manager; approve kubelet serving certificates whose names and addresses are the instance's, as EKS")
	f.IntVar(&cfg.NetworkPolicyChunkSize, "network-policy-endpoint-chunk-size", netpolicy.DefaultChunkSize, "most pod endpoints and rules per PolicyEndpoint")
	f.BoolVar(&cfg.BootstrapAddons, "bootstrap-self-managed-addons", true, "install CoreDNS (Deployment kube-system/coredns, Service kube-dns on the service CIDR's tenth address), as EKS does; afterwards the user's, updated only when berth's manifest changes")
	f.StringVar(&cfg.MetricsServerImage, "metrics-server-image", "", "install metrics-server (kubectl top, HPA; EKS's optional add-on) from this image; empty: not installed, as on EKS (berth up sets it)")
	f.StringVar(&cfg.CoreDNSImage, "coredns-image", addons.CoreDNSImage, "image of the CoreDNS add-on (the default is berth-coredns, which berth up imports into local nodes)")
	return cmd
}

func newNetpolCommand(logger func() *slog.Logger) *cobra.Command {
	var cfg netpolicy.StandaloneConfig
	cmd := &cobra.Command{
		Use:   "netpol-controller [--kubeconfig FILE]",
		Short: "Run only the NetworkPolicy → PolicyEndpoint controller, against any cluster",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return netpolicy.RunStandalone(cmd.Context(), cfg, logger())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "kubeconfig of the cluster (default: in-cluster)")
	f.IntVar(&cfg.Options.ChunkSize, "endpoint-chunk-size", netpolicy.DefaultChunkSize, "most pod endpoints and rules per PolicyEndpoint")
	f.IntVar(&cfg.Options.Workers, "workers", 2, "policies reconciled at once")
	f.StringVar(&cfg.MetricsAddr, "metrics-addr", "", "address for Prometheus metrics and /healthz (empty: none)")
	f.BoolVar(&cfg.LeaderElect, "leader-elect", false, "take the Lease kube-system/"+netpolicy.LeaseName+" (set for several replicas)")
	f.BoolVar(&cfg.InstallCRD, "install-crd", false, "create or update the PolicyEndpoint CRD first (needs write access to CRDs)")
	return cmd
}

func firstEnv(names ...string) string {
	for _, n := range names {
		if v := os.Getenv(n); v != "" {
			return v
		}
	}
	return ""
}

func newEtcdCommand() *cobra.Command {
	etcdCmd := &cobra.Command{Use: "etcd", Short: "Manage the control plane's etcd"}
	snap := &cobra.Command{Use: "snapshot", Short: "Save or restore etcd snapshots"}
	var dataDir, endpoint, peer string
	save := &cobra.Command{
		Use:   "save FILE --data-dir DIR",
		Short: "Save a snapshot of the running embedded etcd",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if dataDir == "" {
				return fmt.Errorf("--data-dir is required")
			}
			pkiDir := filepath.Join(dataDir, "pki")
			cfg, err := etcd.ClientConfig([]string{"https://" + endpoint}, etcd.TLS{
				CAFile: filepath.Join(pkiDir, "etcd-ca.crt"), CertFile: filepath.Join(pkiDir, "apiserver-etcd-client.crt"), KeyFile: filepath.Join(pkiDir, "apiserver-etcd-client.key"),
			})
			if err != nil {
				return err
			}
			ver, err := etcd.SaveSnapshot(cmd.Context(), cfg, args[0])
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "saved %s (etcd %s)\n", args[0], ver)
			return err
		},
	}
	save.Flags().StringVar(&dataDir, "data-dir", "", "the control plane's data dir (for the etcd client certificate)")
	save.Flags().StringVar(&endpoint, "etcd-client-listen", "127.0.0.1:2379", "the embedded etcd's client address")
	restore := &cobra.Command{
		Use:   "restore FILE --data-dir DIR",
		Short: "Replace the embedded etcd with a snapshot (the control plane must be stopped)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if dataDir == "" {
				return fmt.Errorf("--data-dir is required")
			}
			if err := refuseIfRunning(endpoint); err != nil {
				return err
			}
			backup, err := etcd.RestoreSnapshot(args[0], filepath.Join(dataDir, "etcd"), peer)
			if err != nil {
				return err
			}
			msg := fmt.Sprintf("restored %s into %s", args[0], filepath.Join(dataDir, "etcd"))
			if backup != "" {
				msg += "; the previous member is kept in " + backup
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), msg)
			return err
		},
	}
	restore.Flags().StringVar(&dataDir, "data-dir", "", "the control plane's data dir")
	restore.Flags().StringVar(&endpoint, "etcd-client-listen", "127.0.0.1:2379", "the embedded etcd's client address (checked to be unused)")
	restore.Flags().StringVar(&peer, "etcd-peer-listen", "127.0.0.1:2380", "the embedded etcd's peer address")
	snap.AddCommand(save, restore)
	etcdCmd.AddCommand(snap)
	return etcdCmd
}

// refuseIfRunning fails when something serves on the etcd client address:
// restoring under a running member would be lost or corrupt it.
func refuseIfRunning(addr string) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil
	}
	c.Close()
	return fmt.Errorf("something listens on %s: stop berth-controlplane before restoring", addr)
}
