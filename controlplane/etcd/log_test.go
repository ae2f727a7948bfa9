package etcd

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func TestEtcdLogsGoToSlog(t *testing.T) {
	var buf bytes.Buffer
	closing := false
	lg := newLogger(slog.New(slog.NewJSONHandler(&buf, nil)), zapcore.WarnLevel, func() bool { return closing })
	lg.With(zap.String("member", "berth")).Warn("slow fdatasync", zap.Duration("took", 1500000000))
	lg.Info("below the level")
	out := buf.String()
	if !strings.Contains(out, `"level":"WARN"`) || !strings.Contains(out, `"msg":"slow fdatasync"`) || !strings.Contains(out, `"member":"berth"`) || strings.Contains(out, "below the level") {
		t.Fatalf("log: %s", out)
	}
	buf.Reset()
	closing = true
	lg.Error("setting up serving from embedded etcd failed.", zap.Error(errors.New("http: Server closed")))
	lg.Error("real trouble", zap.Error(errors.New("disk full")))
	if out := buf.String(); strings.Contains(out, "setting up serving") || !strings.Contains(out, "disk full") {
		t.Fatalf("shutdown noise kept or real error dropped: %s", out)
	}
}
