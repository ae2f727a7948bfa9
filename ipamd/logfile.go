package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"gopkg.in/natefinch/lumberjack.v2"
)

// logWriter opens ipamd's log destination (--log-file, whose default is
// aws-node's AWS_VPC_K8S_CNI_LOG_FILE): "stderr" (or ""), "stdout" (also
// as /dev/stderr and /dev/stdout), or a regular file rotated as aws-node
// rotates ipamd.log (100 MB, 5 compressed backups, 30 days), where the VPC
// CNI's log collector looks for it. The file is opened now, so a path
// ipamd cannot write stops it at start instead of losing every line; a
// directory or a device is refused, as rotating it would rename it.
func logWriter(dest string) (io.Writer, func() error, error) {
	none := func() error { return nil }
	switch strings.ToLower(strings.TrimSpace(dest)) {
	case "", "stderr", "/dev/stderr":
		return os.Stderr, none, nil
	case "stdout", "/dev/stdout":
		return os.Stdout, none, nil
	}
	fi, err := os.Lstat(dest)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, nil, fmt.Errorf("log file %s: %w", dest, err)
	case !fi.Mode().IsRegular():
		return nil, nil, fmt.Errorf("log file %s: not a regular file (%s); want stderr, stdout or a file path", dest, fi.Mode().Type())
	}
	l := &lumberjack.Logger{Filename: dest, MaxSize: 100, MaxBackups: 5, MaxAge: 30, Compress: true}
	if _, err := l.Write(nil); err != nil {
		return nil, nil, fmt.Errorf("log file %s: %w", dest, err)
	}
	return l, l.Close, nil
}
