package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
	"testing"
	"time"
)

// The plugin's log lines carry what slog.JSONHandler's would: the same
// keys and JSON values, and a time in RFC 3339.
func TestPluginLogMatchesSlog(t *testing.T) {
	for _, tc := range []struct {
		level slog.Level
		msg   string
		kv    []any
	}{
		{slog.LevelDebug, "ADD", []any{"container", "c1", "ip", "10.0.3.4", "table", int32(3), "veth", "eni0123456789a"}},
		{slog.LevelError, "ADD failed", []any{"container", "c1", "code", uint32(11), "msg", `say "no" <to> & \ back`, "details", "line\nbreak\ttab"}},
		{slog.LevelWarn, "teardown", []any{"err", errors.New("delete rule: ESRCH"), "netnsGone", true, "n", 42, "big", uint64(1 << 63), "took", 1500 * time.Microsecond}},
		{slog.LevelInfo, "unicode é ✓ \u2028 \x00 and a bad byte \xff", []any{"nil", nil, "odd"}},
	} {
		var ours, theirs bytes.Buffer
		(&pluginLog{w: &ours, level: slog.LevelDebug}).log(tc.level, tc.msg, tc.kv)
		slog.New(slog.NewJSONHandler(&theirs, &slog.HandlerOptions{Level: slog.LevelDebug})).With("plugin", "berth-cni").Log(context.Background(), tc.level, tc.msg, tc.kv...)
		if n := bytes.Count(ours.Bytes(), []byte("\n")); n != 1 || !bytes.HasSuffix(ours.Bytes(), []byte("\n")) {
			t.Fatalf("%q: %d lines in %q, want one", tc.msg, n, ours.Bytes())
		}
		var a, b map[string]any
		if err := json.Unmarshal(ours.Bytes(), &a); err != nil {
			t.Fatalf("%q: our line %q: %v", tc.msg, ours.Bytes(), err)
		}
		if err := json.Unmarshal(theirs.Bytes(), &b); err != nil {
			t.Fatal(err)
		}
		if _, err := time.Parse(time.RFC3339Nano, a["time"].(string)); err != nil {
			t.Errorf("%q: time %v: %v", tc.msg, a["time"], err)
		}
		delete(a, "time")
		delete(b, "time")
		if !maps.Equal(a, b) {
			t.Errorf("%q:\n ours  %v\n slog's %v", tc.msg, a, b)
		}
	}
}
