// echo answers every HTTP request with its host name (a pod's is the pod's
// name): the test's server image, since local nodes pull from no registry.
// "echo lookup NAME" resolves NAME as the pod's programs do (its
// resolv.conf, search domains and all) and prints the addresses.
package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
)

func main() {
	if len(os.Args) == 3 && os.Args[1] == "lookup" {
		addrs, err := net.DefaultResolver.LookupHost(context.Background(), os.Args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(strings.Join(addrs, " "))
		return
	}
	addr := ":8080"
	if len(os.Args) > 1 {
		addr = os.Args[1]
	}
	host, _ := os.Hostname()
	fmt.Fprintf(os.Stderr, "echo %s listening on %s\n", host, addr)
	err := http.ListenAndServe(addr, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, host)
	}))
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
