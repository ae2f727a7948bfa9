// Package command is the shared frame of every berth binary: a cobra root
// with --version and the logging flags, run under a context that ends on
// SIGINT/SIGTERM, exiting non-zero on any error.
package command

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/berth-io/berth/internal/buildinfo"
	"github.com/berth-io/berth/internal/logging"
)

// Root returns a root command for binary name with --version and logging
// flags. Logger returns the logger built from those flags; it is valid inside
// RunE of the root and of every subcommand.
func Root(name, short string) (root *cobra.Command, logger func() *slog.Logger) {
	var opts logging.Options
	var log *slog.Logger
	root = &cobra.Command{
		Use:           name,
		Short:         short,
		Version:       buildinfo.Get().String(),
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			l, err := logging.New(cmd.ErrOrStderr(), opts)
			if err != nil {
				return err
			}
			log = l.With("component", name)
			return nil
		},
	}
	root.SetVersionTemplate(name + " {{.Version}}\n")
	// Declared here, not left to cobra: cobra merges pflag.CommandLine,
	// where Kubernetes' verflag registers a non-bool --version on import.
	root.Flags().Bool("version", false, "print the version and exit")
	opts.AddFlags(root.PersistentFlags())
	return root, func() *slog.Logger {
		if log == nil {
			return slog.New(slog.NewTextHandler(os.Stderr, nil))
		}
		return log
	}
}

// Main runs root under a signal-cancelled context and exits 1 on error.
func Main(root *cobra.Command) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := root.ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", root.Name(), err)
		os.Exit(1)
	}
}
