// Package simfile keeps a payment simulator's trades in a JSON file, as a
// real provider keeps its trades while its client restarts: read once when
// the simulator starts, written whole after every change — to a temporary
// file renamed over the old one, so that a crash leaves one or the other,
// never half of either.
package simfile

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
)

// Load decodes the JSON file at path into v. A file that does not exist
// leaves v alone and is not an error (loaded is then false); any other
// error names the file.
func Load(path string, v any) (loaded bool, err error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return false, fmt.Errorf("%s: %w", path, err)
	}
	return true, nil
}

// Save writes v as JSON to path (mode 0600), through path+".tmp" renamed
// over it.
func Save(path string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}
