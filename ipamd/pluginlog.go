package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"
)

// Rotation of berth-cni's log file, as aws-node's plugin rotates its own
// (100 MB, 5 backups).
const (
	pluginLogMaxBytes = 100 << 20
	pluginLogBackups  = 5
)

// keepPluginLog looks after berth-cni's log file (AWS_VPC_K8S_PLUGIN_LOG_FILE)
// for as long as ipamd runs: it makes the file's directory, so the plugin's
// first calls on a new node are logged, and rotates the file once a minute
// when it has grown past pluginLogMaxBytes. The plugin, exec'd for every
// pod, only opens the file to append a few lines, and links no rotation
// code (its start-up is pod latency): renaming the file under it is safe,
// as its next call starts a new one.
func keepPluginLog(ctx context.Context, path string, log *slog.Logger) {
	if path == "" || path == "stderr" {
		return
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		log.Warn("berth-cni's log directory", "path", path, "err", err)
	}
	if fi, err := os.Lstat(path); err == nil && !fi.Mode().IsRegular() {
		log.Info("berth-cni's log is not a regular file; ipamd does not rotate it", "path", path, "type", fi.Mode().Type().String())
	}
	every(ctx, time.Minute, func() {
		if err := rotatePluginLog(path, pluginLogMaxBytes, pluginLogBackups); err != nil {
			log.Warn("rotate berth-cni's log", "path", path, "err", err)
		}
	})
}

// rotatePluginLog renames path to path.1 (and path.1 to path.2, and so
// on, dropping the oldest beyond backups) when it holds more than max
// bytes.
func rotatePluginLog(path string, max int64, backups int) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		// A symbolic link (or anything else) is someone else's to rotate:
		// renaming it would break their arrangement.
		return nil
	}
	if fi.Size() <= max {
		return nil
	}
	for i := backups - 1; i >= 1; i-- {
		err := os.Rename(fmt.Sprintf("%s.%d", path, i), fmt.Sprintf("%s.%d", path, i+1))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return os.Rename(path, path+".1")
}
