package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/spf13/cobra"
)

// tokenLifetime is how long the server accepts a token; clients refresh a
// minute early so a token never expires in flight.
const tokenLifetime = 15 * time.Minute

func newTokenCommand() *cobra.Command {
	var clusterName, roleARN, sessionName, region string
	cmd := &cobra.Command{
		Use:   "token --cluster-name NAME [--role-arn ARN]",
		Short: "Print a k8s-aws-v1 token as a client.authentication.k8s.io/v1 ExecCredential",
		Long: "token presigns an STS GetCallerIdentity request for the cluster with the default AWS\n" +
			"credential chain (or a role it assumes) and prints it as an ExecCredential, so kubectl\n" +
			"and kubelet authenticate to berth or EKS with an IAM identity.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if clusterName == "" {
				return fmt.Errorf("--cluster-name is required")
			}
			tok, exp, err := presignToken(cmd.Context(), clusterName, roleARN, sessionName, region)
			if err != nil {
				return err
			}
			return writeExecCredential(cmd.OutOrStdout(), tok, exp)
		},
	}
	cmd.Flags().StringVar(&clusterName, "cluster-name", "", "name of the cluster (the signed x-k8s-aws-id header)")
	cmd.Flags().StringVar(&roleARN, "role-arn", "", "assume this IAM role and sign as it")
	cmd.Flags().StringVar(&sessionName, "session-name", "", "session name when assuming --role-arn (default berth-token-<unix time>)")
	cmd.Flags().StringVar(&region, "region", "", "AWS region (default: from the AWS config)")
	return cmd
}

// presignToken builds a k8s-aws-v1 token: the base64url of a presigned STS
// GetCallerIdentity URL that also signs the cluster name header.
func presignToken(ctx context.Context, cluster, roleARN, session, region string) (string, time.Time, error) {
	var opts []func(*config.LoadOptions) error
	if region != "" {
		opts = append(opts, config.WithRegion(region))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("aws config: %w", err)
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	if roleARN != "" {
		if session == "" {
			session = fmt.Sprintf("berth-token-%d", time.Now().Unix())
		}
		provider := stscreds.NewAssumeRoleProvider(sts.NewFromConfig(cfg), roleARN, func(o *stscreds.AssumeRoleOptions) {
			o.RoleSessionName = session
		})
		cfg.Credentials = aws.NewCredentialsCache(provider)
	}
	signedAt := time.Now()
	req, err := sts.NewPresignClient(sts.NewFromConfig(cfg)).PresignGetCallerIdentity(ctx, &sts.GetCallerIdentityInput{},
		func(po *sts.PresignOptions) {
			po.ClientOptions = append(po.ClientOptions, func(o *sts.Options) {
				o.APIOptions = append(o.APIOptions, smithyhttp.SetHeaderValue("x-k8s-aws-id", cluster))
			})
		})
	if err != nil {
		return "", time.Time{}, fmt.Errorf("presign GetCallerIdentity: %w", err)
	}
	tok := "k8s-aws-v1." + base64.RawURLEncoding.EncodeToString([]byte(req.URL))
	return tok, signedAt.Add(tokenLifetime - time.Minute), nil
}

func writeExecCredential(w io.Writer, token string, expires time.Time) error {
	cred := map[string]any{
		"kind":       "ExecCredential",
		"apiVersion": "client.authentication.k8s.io/v1",
		"spec":       map[string]any{},
		"status": map[string]any{
			"expirationTimestamp": expires.UTC().Format(time.RFC3339),
			"token":               token,
		},
	}
	return json.NewEncoder(w).Encode(cred)
}
