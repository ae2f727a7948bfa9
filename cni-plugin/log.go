package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"time"
)

// pluginLog is berth-cni's log: one line per event in slog.JSONHandler's
// format ({"time":…,"level":"DEBUG","msg":…,"plugin":"berth-cni",…}),
// with slog's levels and their names. It writes the line itself instead of
// through slog.Logger and slog.JSONHandler, whose first use in a process
// (the caller's frame, handler state, buffer pools, the value encoder)
// cost each ADD ~0.3 ms on the benchmark VM, for the one line an ADD logs
// at aws-node's default level (docs/benchmarks.md). Strings are escaped as
// the plugin's result is (appendJSONString): the same JSON values as
// slog's, with <, > and & written as \u00XX.
type pluginLog struct {
	w     io.Writer // nil: nothing is logged
	level slog.Level
}

// logger opens the log the conflist names (AWS_VPC_K8S_PLUGIN_LOG_FILE and
// _LEVEL, as aws-node writes them): a file appended to, or "stderr" (the
// runtime's; stdout carries the result). A log that cannot be opened is
// off: the pod's network matters more than the plugin's log.
func logger(conf *NetConf) *pluginLog {
	l := &pluginLog{level: slog.LevelInfo}
	// The VPC CNI's level names, any case; info otherwise.
	if err := l.level.UnmarshalText([]byte(conf.PluginLogLevel)); err != nil {
		l.level = slog.LevelInfo
	}
	switch conf.PluginLogFile {
	case "":
	case "stderr":
		l.w = os.Stderr
	default:
		if f, err := os.OpenFile(conf.PluginLogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); err == nil {
			l.w = f
		}
	}
	return l
}

func (l *pluginLog) Debug(msg string, kv ...any) { l.log(slog.LevelDebug, msg, kv) }
func (l *pluginLog) Info(msg string, kv ...any)  { l.log(slog.LevelInfo, msg, kv) }
func (l *pluginLog) Warn(msg string, kv ...any)  { l.log(slog.LevelWarn, msg, kv) }
func (l *pluginLog) Error(msg string, kv ...any) { l.log(slog.LevelError, msg, kv) }

// log writes msg and the key-value pairs kv as one line, in one write (the
// file is opened for appending, so lines of concurrent plugins do not mix).
func (l *pluginLog) log(level slog.Level, msg string, kv []any) {
	if l.w == nil || level < l.level {
		return
	}
	b := make([]byte, 0, 256)
	b = append(b, `{"time":"`...)
	b = time.Now().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","level":`...)
	b = appendJSONString(b, level.String())
	b = append(b, `,"msg":`...)
	b = appendJSONString(b, msg)
	b = append(b, `,"plugin":"berth-cni"`...)
	for i := 0; i < len(kv); i += 2 {
		b = append(b, ',')
		if i+1 == len(kv) { // a value without a key, as slog names it
			b = appendJSONString(b, "!BADKEY")
			b = append(b, ':')
			b = appendJSONValue(b, kv[i])
			break
		}
		b = appendJSONString(b, fmt.Sprint(kv[i]))
		b = append(b, ':')
		b = appendJSONValue(b, kv[i+1])
	}
	b = append(b, '}', '\n')
	_, _ = l.w.Write(b)
}

// appendJSONValue appends v as slog.JSONHandler writes it: numbers,
// booleans and durations (in nanoseconds) bare, errors by their text,
// anything else as its fmt text.
func appendJSONValue(b []byte, v any) []byte {
	switch v := v.(type) {
	case nil:
		return append(b, "null"...)
	case string:
		return appendJSONString(b, v)
	case bool:
		return strconv.AppendBool(b, v)
	case int:
		return strconv.AppendInt(b, int64(v), 10)
	case int32:
		return strconv.AppendInt(b, int64(v), 10)
	case int64:
		return strconv.AppendInt(b, v, 10)
	case uint:
		return strconv.AppendUint(b, uint64(v), 10)
	case uint32:
		return strconv.AppendUint(b, uint64(v), 10)
	case uint64:
		return strconv.AppendUint(b, v, 10)
	case time.Duration:
		return strconv.AppendInt(b, int64(v), 10) // nanoseconds, as slog
	case error:
		return appendJSONString(b, v.Error())
	}
	// slog would marshal structs and maps as JSON; the plugin logs none.
	return appendJSONString(b, fmt.Sprint(v))
}
