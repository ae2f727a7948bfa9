package server

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/berth-io/berth/localcloud/ec2"
	"github.com/berth-io/berth/localcloud/faults"
)

// The admin API under /_localcloud/ lets tests steer localcloud. It answers
// only callers on loopback: instances reach the API port too, and a node
// agent must not be able to inject faults.
//
//	GET    /_localcloud/health                      200 when serving
//	GET    /_localcloud/credentials                 root keys, region, account
//	GET    /_localcloud/calls                       {"calls":{"ec2:RunInstances":3},"throttled":{...}}
//	DELETE /_localcloud/calls                       reset the counters
//	GET    /_localcloud/faults                      injected faults
//	PUT    /_localcloud/faults                      {"ec2:AttachNetworkInterface":{"errorRate":1,"errorCode":"...","latencyMs":0,"count":2}}
//	DELETE /_localcloud/faults                      remove all faults
//	PUT    /_localcloud/throttling                  {"enabled":true,"buckets":{"eni-mutating":{"capacity":10,"refill":1}}}
//	PUT    /_localcloud/subnets/<id>/exhaustion     {"exhausted":true}
//	PUT    /_localcloud/imds                        {"lagMs":2000}
//	GET    /_localcloud/imds/<instance-id>          {"endpoint":"http://127.0.0.1:port"} (host IMDS listener)
func (s *Server) serveAdmin(w http.ResponseWriter, r *http.Request) {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		adminError(w, http.StatusForbidden, "the admin API answers loopback callers only")
		return
	}
	path := strings.TrimPrefix(r.URL.Path, "/_localcloud/")
	switch {
	case path == "health":
		writeJSON(w, map[string]string{"status": "ok"})
	case path == "credentials" && r.Method == http.MethodGet:
		k := s.IAM.Root()
		writeJSON(w, map[string]string{"accessKeyId": k.AccessKeyID, "secretAccessKey": k.SecretAccessKey, "region": s.cfg.Region, "account": s.IAM.Account()})
	case path == "calls" && r.Method == http.MethodGet:
		calls, throttled := s.Faults.Calls()
		writeJSON(w, map[string]map[string]int{"calls": calls, "throttled": throttled})
	case path == "calls" && r.Method == http.MethodDelete:
		s.Faults.ResetCalls()
		w.WriteHeader(http.StatusNoContent)
	case path == "faults" && r.Method == http.MethodGet:
		writeJSON(w, s.Faults.Faults())
	case path == "faults" && r.Method == http.MethodPut:
		var m map[string]faults.Fault
		if !readJSON(w, r, &m) {
			return
		}
		for k, f := range m {
			if !strings.Contains(k, ":") || f.ErrorRate < 0 || f.ErrorRate > 1 || f.LatencyMS < 0 || f.Count < 0 {
				adminError(w, http.StatusBadRequest, fmt.Sprintf("bad fault %q: keys are <service>:<operation>, errorRate in [0,1], latencyMs and count >= 0", k))
				return
			}
		}
		s.Faults.SetFaults(m)
		w.WriteHeader(http.StatusNoContent)
	case path == "faults" && r.Method == http.MethodDelete:
		s.Faults.SetFaults(nil)
		w.WriteHeader(http.StatusNoContent)
	case path == "throttling" && r.Method == http.MethodPut:
		var body struct {
			Enabled *bool                             `json:"enabled"`
			Buckets map[faults.Category]faults.Bucket `json:"buckets"`
		}
		if !readJSON(w, r, &body) {
			return
		}
		if body.Enabled != nil {
			s.Faults.SetThrottling(*body.Enabled)
		}
		if body.Buckets != nil {
			b := faults.DefaultBuckets()
			for c, v := range body.Buckets {
				if _, ok := b[c]; !ok || v.Capacity < 1 || v.Refill < 0 {
					adminError(w, http.StatusBadRequest, fmt.Sprintf("bad bucket %q", c))
					return
				}
				b[c] = v
			}
			s.Faults.SetBuckets(b)
		}
		w.WriteHeader(http.StatusNoContent)
	case strings.HasPrefix(path, "subnets/") && strings.HasSuffix(path, "/exhaustion") && r.Method == http.MethodPut:
		id := strings.TrimSuffix(strings.TrimPrefix(path, "subnets/"), "/exhaustion")
		var body struct {
			Exhausted bool `json:"exhausted"`
		}
		if !readJSON(w, r, &body) {
			return
		}
		err := s.EC2.Update(r.Context(), func(st *ec2.State) error {
			sub := st.Subnets[id]
			if sub == nil {
				return fmt.Errorf("subnet %s not found", id)
			}
			sub.ExhaustedByFault = body.Exhausted
			return nil
		})
		if err != nil {
			adminError(w, http.StatusNotFound, err.Error())
			return
		}
		w.WriteHeader(http.StatusNoContent)
	case path == "imds" && r.Method == http.MethodPut:
		var body struct {
			LagMS int `json:"lagMs"`
		}
		if !readJSON(w, r, &body) {
			return
		}
		if body.LagMS < 0 {
			adminError(w, http.StatusBadRequest, "lagMs must be >= 0")
			return
		}
		s.IMDS.SetLag(time.Duration(body.LagMS) * time.Millisecond)
		w.WriteHeader(http.StatusNoContent)
	case strings.HasPrefix(path, "imds/") && r.Method == http.MethodGet:
		id := strings.TrimPrefix(path, "imds/")
		ep, err := s.imdsEnds.Endpoint(r.Context(), id)
		if err != nil {
			adminError(w, http.StatusNotFound, err.Error())
			return
		}
		writeJSON(w, map[string]string{"endpoint": ep})
	default:
		adminError(w, http.StatusNotFound, "no admin route "+r.Method+" /_localcloud/"+path)
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		adminError(w, http.StatusBadRequest, "bad JSON body: "+err.Error())
		return false
	}
	return true
}

func adminError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
