package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/berth-io/berth/internal/command"
)

func newRootCommand() *cobra.Command {
	root, _ := command.Root("berth", "berth: an EKS-compatible Kubernetes platform on one machine or on AWS")
	root.AddCommand(&cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintln(cmd.OutOrStdout(), "berth "+root.Version)
			return err
		},
	})
	root.AddCommand(newUpCommand(), newDownCommand(), newTokenCommand(), newKubeconfigCommand())
	return root
}
