package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"gopkg.in/natefinch/lumberjack.v2"
)

// logWriter opens ipamd's log destination (--log-file, whose default is
// aws-node's AWS_VPC_K8S_CNI_LOG_FILE): "stderr" (or ""), "stdout", or a
// file rotated as aws-node rotates ipamd.log (100 MB, 5 compressed
// backups, 30 days), where the VPC CNI's log collector looks for it. The
// file is opened now, so a path ipamd cannot write stops it at start
// instead of losing every line.
func logWriter(dest string) (io.Writer, func() error, error) {
	switch strings.ToLower(strings.TrimSpace(dest)) {
	case "", "stderr":
		return os.Stderr, func() error { return nil }, nil
	case "stdout":
		return os.Stdout, func() error { return nil }, nil
	}
	l := &lumberjack.Logger{Filename: dest, MaxSize: 100, MaxBackups: 5, MaxAge: 30, Compress: true}
	if _, err := l.Write(nil); err != nil {
		return nil, nil, fmt.Errorf("log file %s: %w", dest, err)
	}
	return l, l.Close, nil
}
