// Package simkit is what the payment simulators share to outlive their
// client: a JSON file keeping their trades, as a real provider keeps its
// trades while its client restarts (read once when the simulator starts,
// written whole after every change, to a temporary file renamed over the
// old one, so that a crash leaves one or the other, never half of either),
// and the wait of a payer that pays by itself.
package simkit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// After runs f in a goroutine d from now, unless ctx ends first; wg counts
// the goroutine until it returns, so that the simulator's Wait waits for
// f and its Stop, cancelling ctx, ends the wait at once (no timer left).
func After(ctx context.Context, wg *sync.WaitGroup, d time.Duration, f func()) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
		case <-t.C:
			f()
		}
	}()
}

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
