package main

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/eks"
	"github.com/spf13/cobra"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

func newKubeconfigCommand() *cobra.Command {
	var clusterName, roleARN, region, path, alias string
	cmd := &cobra.Command{
		Use:   "kubeconfig --cluster-name NAME",
		Short: "Add a cluster to a kubeconfig, authenticating with berth token (like aws eks update-kubeconfig)",
		Long: "kubeconfig asks the EKS API (DescribeCluster) for the cluster's endpoint and CA and merges a\n" +
			"cluster, a user that runs `berth token` and a context into the kubeconfig, making it current.\n" +
			"The EKS endpoint follows the SDK's rules ($AWS_ENDPOINT_URL_EKS, then $AWS_ENDPOINT_URL).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if clusterName == "" {
				return fmt.Errorf("--cluster-name is required")
			}
			var opts []func(*config.LoadOptions) error
			if region != "" {
				opts = append(opts, config.WithRegion(region))
			}
			cfg, err := config.LoadDefaultConfig(cmd.Context(), opts...)
			if err != nil {
				return fmt.Errorf("aws config: %w", err)
			}
			out, err := eks.NewFromConfig(cfg).DescribeCluster(cmd.Context(), &eks.DescribeClusterInput{Name: aws.String(clusterName)})
			if err != nil {
				return fmt.Errorf("describe cluster %s: %w", clusterName, err)
			}
			c := out.Cluster
			if c.Endpoint == nil || c.CertificateAuthority == nil || c.CertificateAuthority.Data == nil {
				return fmt.Errorf("cluster %s has no endpoint or CA yet (status %s)", clusterName, c.Status)
			}
			ca, err := base64.StdEncoding.DecodeString(*c.CertificateAuthority.Data)
			if err != nil {
				return fmt.Errorf("cluster %s: certificate authority data: %w", clusterName, err)
			}
			if path == "" {
				path = clientcmd.RecommendedHomeFile
				if env := os.Getenv("KUBECONFIG"); env != "" {
					path = filepath.SplitList(env)[0]
				}
			}
			kc, err := clientcmd.LoadFromFile(path)
			if os.IsNotExist(err) {
				kc, err = clientcmdapi.NewConfig(), nil
			}
			if err != nil {
				return fmt.Errorf("load %s: %w", path, err)
			}
			name := aws.ToString(c.Arn)
			if name == "" {
				name = clusterName
			}
			if alias == "" {
				alias = name
			}
			self, err := os.Executable()
			if err != nil {
				self = "berth"
			}
			args := []string{"token", "--cluster-name", clusterName, "--region", cfg.Region}
			if roleARN != "" {
				args = append(args, "--role-arn", roleARN)
			}
			exec := &clientcmdapi.ExecConfig{APIVersion: "client.authentication.k8s.io/v1", Command: self, Args: args,
				InteractiveMode: clientcmdapi.NeverExecInteractiveMode}
			for _, e := range []string{"AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_STS", "AWS_PROFILE"} {
				if v := os.Getenv(e); v != "" {
					exec.Env = append(exec.Env, clientcmdapi.ExecEnvVar{Name: e, Value: v})
				}
			}
			kc.Clusters[name] = &clientcmdapi.Cluster{Server: *c.Endpoint, CertificateAuthorityData: ca}
			kc.AuthInfos[name] = &clientcmdapi.AuthInfo{Exec: exec}
			kc.Contexts[alias] = &clientcmdapi.Context{Cluster: name, AuthInfo: name}
			kc.CurrentContext = alias
			if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
				return err
			}
			if err := clientcmd.WriteToFile(*kc, path); err != nil {
				return fmt.Errorf("write %s: %w", path, err)
			}
			if err := os.Chmod(path, 0o600); err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "Added context %s (cluster %s at %s) to %s\n", alias, clusterName, *c.Endpoint, path)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&clusterName, "cluster-name", "", "name of the cluster")
	f.StringVar(&roleARN, "role-arn", "", "IAM role berth token assumes")
	f.StringVar(&region, "region", "", "AWS region (default: from the AWS config)")
	f.StringVar(&path, "kubeconfig", "", "kubeconfig to update (default: $KUBECONFIG, else ~/.kube/config)")
	f.StringVar(&alias, "alias", "", "context name (default: the cluster ARN)")
	return cmd
}
