// echo answers every HTTP request with its host name (a pod's is the pod's
// name): the test's server image, since local nodes pull from no registry.
// "echo lookup NAME" resolves NAME as the pod's programs do (its
// resolv.conf, search domains and all) and prints the addresses.
// "echo webhook ADDR CERT KEY" is a validating admission webhook over TLS
// that denies objects labelled berth-test/deny=yes.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
)

// review is the part of an admission.k8s.io/v1 AdmissionReview used here.
type review struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Request    *struct {
		UID    string `json:"uid"`
		Object struct {
			Metadata struct {
				Labels map[string]string `json:"labels"`
			} `json:"metadata"`
		} `json:"object"`
	} `json:"request,omitempty"`
	Response *response `json:"response,omitempty"`
}

type response struct {
	UID     string  `json:"uid"`
	Allowed bool    `json:"allowed"`
	Status  *status `json:"status,omitempty"`
}

type status struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func webhook(addr, cert, key string) error {
	fmt.Fprintf(os.Stderr, "webhook listening on %s\n", addr)
	return http.ListenAndServeTLS(addr, cert, key, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var rv review
		if err := json.NewDecoder(r.Body).Decode(&rv); err != nil || rv.Request == nil {
			http.Error(w, fmt.Sprintf("not an AdmissionReview: %v", err), http.StatusBadRequest)
			return
		}
		resp := &response{UID: rv.Request.UID, Allowed: rv.Request.Object.Metadata.Labels["berth-test/deny"] != "yes"}
		if !resp.Allowed {
			resp.Status = &status{http.StatusForbidden, "denied by the echo webhook"}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(review{APIVersion: rv.APIVersion, Kind: rv.Kind, Response: resp})
	}))
}

func main() {
	if len(os.Args) == 5 && os.Args[1] == "webhook" {
		fmt.Fprintln(os.Stderr, webhook(os.Args[2], os.Args[3], os.Args[4]))
		os.Exit(1)
	}
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
