package server

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
)

// logRouter gives each EKS control-plane log type its logger. Every
// record goes to the process log; the records of an enabled type are also
// written, as JSON lines, to DIR/logs/<type>.log, the local counterpart of
// the CloudWatch log streams EKS creates per type.
type logRouter struct {
	base    *slog.Logger
	dir     string
	enabled []string
	files   []*os.File
}

func newLogRouter(base *slog.Logger, dir string, enabled []string) *logRouter {
	return &logRouter{base: base, dir: dir, enabled: enabled}
}

// logger returns the logger for a log type (api, authenticator, ...).
func (r *logRouter) logger(typ string) (*slog.Logger, error) {
	l := r.base.With("subsystem", typ)
	if !slices.Contains(r.enabled, typ) {
		return l, nil
	}
	if err := os.MkdirAll(r.dir, 0o700); err != nil {
		return nil, fmt.Errorf("log dir: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(r.dir, typ+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("%s log: %w", typ, err)
	}
	r.files = append(r.files, f)
	file := slog.NewJSONHandler(f, &slog.HandlerOptions{Level: slog.LevelInfo})
	return slog.New(tee{l.Handler(), file.WithAttrs([]slog.Attr{slog.String("logType", typ)})}), nil
}

func (r *logRouter) Close() {
	for _, f := range r.files {
		f.Close()
	}
}

// tee sends records to two handlers, each filtering by its own level.
type tee struct{ a, b slog.Handler }

func (t tee) Enabled(ctx context.Context, l slog.Level) bool {
	return t.a.Enabled(ctx, l) || t.b.Enabled(ctx, l)
}

func (t tee) Handle(ctx context.Context, r slog.Record) error {
	var err error
	if t.a.Enabled(ctx, r.Level) {
		err = t.a.Handle(ctx, r.Clone())
	}
	if t.b.Enabled(ctx, r.Level) {
		if e := t.b.Handle(ctx, r); e != nil {
			err = e
		}
	}
	return err
}

func (t tee) WithAttrs(as []slog.Attr) slog.Handler { return tee{t.a.WithAttrs(as), t.b.WithAttrs(as)} }
func (t tee) WithGroup(g string) slog.Handler       { return tee{t.a.WithGroup(g), t.b.WithGroup(g)} }
