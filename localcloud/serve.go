package main

import (
	"fmt"
	"net"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-io/berth/internal/command"
	"github.com/berth-io/berth/localcloud/server"
)

func newRootCommand() *cobra.Command {
	root, logger := command.Root("berth-localcloud", "AWS emulator (EC2, IMDSv2, STS, EFS) for berth development and tests")
	var (
		listen     []string
		stateDir   string
		imdsLag    time.Duration
		attachMin  time.Duration
		attachMax  time.Duration
		startDelay time.Duration
		noThrottle bool
		dp         string
		egressNAT  bool
	)
	serve := &cobra.Command{
		Use:   "serve",
		Short: "Serve the AWS APIs on one HTTP listener",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if stateDir == "" {
				return fmt.Errorf("--state-dir is required")
			}
			if attachMax < attachMin {
				return fmt.Errorf("--attach-delay-max (%s) is below --attach-delay-min (%s)", attachMax, attachMin)
			}
			cfg := server.DefaultConfig(stateDir)
			cfg.IMDSLag = imdsLag
			cfg.EC2.AttachDelayMin, cfg.EC2.AttachDelayMax = attachMin, attachMax
			cfg.EC2.InstanceStartDelay = startDelay
			cfg.EC2.VolumeCreateDelay = attachMin
			cfg.NoEgressNAT = !egressNAT
			switch dp {
			case "auto":
				cfg.Datapath = os.Geteuid() == 0
			case "on":
				cfg.Datapath = true
			case "off":
			default:
				return fmt.Errorf("--datapath %q: want auto, on or off", dp)
			}
			ctx := cmd.Context()
			srv, err := server.New(ctx, cfg, logger())
			if err != nil {
				return err
			}
			if noThrottle {
				srv.Faults.SetThrottling(false)
			}
			if len(listen) == 0 {
				return fmt.Errorf("--listen is required")
			}
			var lns []net.Listener
			for _, a := range listen {
				ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", a)
				if err != nil {
					for _, l := range lns {
						l.Close()
					}
					return fmt.Errorf("listen %s: %w", a, err)
				}
				lns = append(lns, ln)
			}
			return srv.Run(ctx, lns[0], lns[1:]...)
		},
	}
	f := serve.Flags()
	f.StringArrayVar(&listen, "listen", []string{"127.0.0.1:4566"}, "address of the API listener (repeat for more: `berth up` adds the host address its instances reach)")
	f.StringVar(&stateDir, "state-dir", "", "directory for state, credentials and config (created 0700)")
	f.DurationVar(&imdsLag, "imds-lag", 2*time.Second, "how long metadata changes take to show in IMDS")
	f.DurationVar(&attachMin, "attach-delay-min", time.Second, "shortest attaching/detaching time of ENIs and volumes")
	f.DurationVar(&attachMax, "attach-delay-max", 3*time.Second, "longest attaching/detaching time of ENIs and volumes")
	f.DurationVar(&startDelay, "instance-start-delay", 2*time.Second, "pending → running time of instances")
	f.BoolVar(&noThrottle, "no-throttle", false, "disable EC2 request throttling")
	f.StringVar(&dp, "datapath", "auto", `VPC-in-a-box datapath (namespaces, veths, loop devices): "on", "off" or "auto" (on when root)`)
	f.BoolVar(&egressNAT, "egress-nat", true, "give each VPC a NAT gateway: traffic from its addresses that leaves the host is masqueraded to the host's address (nodes pull images, pods reach the internet)")
	root.AddCommand(serve)
	return root
}
