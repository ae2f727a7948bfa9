// Package logging builds the one *slog.Logger a berth binary injects into its
// components. Text is for people at a terminal; JSON (--log-format=json) is for
// log shippers such as Fluent Bit and CloudWatch agents.
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/pflag"
)

// Options are the logging flags every binary shares.
type Options struct {
	Format string // "text" or "json"
	Level  string // "debug", "info", "warn", "error"
}

// AddFlags registers --log-format and --log-level.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Format, "log-format", "text", `log format: "text" or "json"`)
	fs.StringVar(&o.Level, "log-level", "info", `minimum level: "debug", "info", "warn" or "error"`)
}

// New returns a logger writing to w, or an error naming the bad option.
func New(w io.Writer, o Options) (*slog.Logger, error) {
	var level slog.Level
	switch strings.ToLower(o.Level) {
	case "", "info":
		level = slog.LevelInfo
	case "debug":
		level = slog.LevelDebug
	case "warn", "warning":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	default:
		return nil, fmt.Errorf("invalid --log-level %q: want debug, info, warn or error", o.Level)
	}
	hopts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(o.Format) {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, hopts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, hopts)), nil
	default:
		return nil, fmt.Errorf("invalid --log-format %q: want text or json", o.Format)
	}
}
