package metrics

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestServeExposesRegistry(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reg := NewRegistry("testcomp")
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "berth_test_events_total", Help: "test"})
	reg.MustRegister(c)
	c.Add(3)
	addr, err := Serve(ctx, slog.New(slog.DiscardHandler), "127.0.0.1:0", reg)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + addr.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		"berth_test_events_total 3",
		`berth_build_info{component="testcomp"`,
		"go_goroutines",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestRegistriesAreIndependent(t *testing.T) {
	// Two daemons in one test process must not collide on registration.
	a, b := NewRegistry("a"), NewRegistry("b")
	for _, reg := range []*prometheus.Registry{a, b} {
		reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "berth_same_total", Help: "x"}))
	}
}
