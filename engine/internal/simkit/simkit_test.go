package simfile_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/grab-engine/grab/engine/internal/simfile"
)

func TestSaveLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "trades.json")
	var got map[string]int
	if loaded, err := simfile.Load(path, &got); loaded || err != nil || got != nil {
		t.Fatalf("missing file: %v, %v, %v", loaded, err, got)
	}
	if err := simfile.Save(path, map[string]int{"a": 1}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("stat %v, %v", fi, err)
	}
	if loaded, err := simfile.Load(path, &got); !loaded || err != nil || got["a"] != 1 {
		t.Fatalf("load: %v, %v, %v", loaded, err, got)
	}
	if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := simfile.Load(path, &got); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("corrupt file: %v", err)
	}
}
