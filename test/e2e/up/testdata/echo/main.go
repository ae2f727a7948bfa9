// echo answers every HTTP request with its host name (a pod's is the pod's
// name): the test's server image, since local nodes pull from no registry.
package main

import (
	"fmt"
	"net/http"
	"os"
)

func main() {
	addr := ":8080"
	if len(os.Args) > 1 {
		addr = os.Args[1]
	}
	host, _ := os.Hostname()
	err := http.ListenAndServe(addr, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, host)
	}))
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
