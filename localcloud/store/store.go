// Package store persists one service's state as a JSON file, atomically
// (temp file, fsync, rename, fsync of the directory), so a crash or kill at
// any instant leaves either the old or the new state, never half of one.
package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/berth-io/berth/internal/atomicfile"
)

// Load reads path into v. A missing file is not an error: it returns false
// and leaves v as it was (the caller's fresh state).
func Load(path string, v any) (bool, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read state %s: %w", path, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("decode state %s: %w", path, err)
	}
	return true, nil
}

// Save writes v to path atomically with file mode perm.
func Save(path string, v any, perm fs.FileMode) error {
	b, err := json.MarshalIndent(v, "", " ")
	if err != nil {
		return fmt.Errorf("encode state %s: %w", path, err)
	}
	return atomicfile.WriteFile(path, append(b, '\n'), perm)
}
