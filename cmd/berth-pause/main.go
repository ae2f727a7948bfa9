// berth-pause is the sandbox ("pause") container of local nodes: it holds a
// pod's namespaces open, reaps the zombies of a shared PID namespace and
// exits 0 on SIGINT or SIGTERM, as Kubernetes' pause does. Local nodes have
// no registry to pull registry.k8s.io/pause from, so `berth up` imports an
// image of this binary into each node's containerd.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/berth-io/berth/internal/version"
)

func main() {
	if len(os.Args) > 1 {
		if os.Args[1] == "-v" || os.Args[1] == "--version" {
			fmt.Println("berth-pause", version.Version)
			return
		}
		fmt.Fprintln(os.Stderr, "usage: berth-pause [-v]")
		os.Exit(2)
	}
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "warning: berth-pause should be the first process of a PID namespace")
	}
	sig := make(chan os.Signal, 8)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sig {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		reap()
	}
}

// reap collects every exited child: signals coalesce, so one SIGCHLD may
// stand for several.
func reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
