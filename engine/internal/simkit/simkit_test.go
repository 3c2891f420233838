package simkit_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/grab-engine/grab/engine/internal/simkit"
)

func TestSaveLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "trades.json")
	var got map[string]int
	if loaded, err := simkit.Load(path, &got); loaded || err != nil || got != nil {
		t.Fatalf("missing file: %v, %v, %v", loaded, err, got)
	}
	if err := simkit.Save(path, map[string]int{"a": 1}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("stat %v, %v", fi, err)
	}
	if loaded, err := simkit.Load(path, &got); !loaded || err != nil || got["a"] != 1 {
		t.Fatalf("load: %v, %v, %v", loaded, err, got)
	}
	if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := simkit.Load(path, &got); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("corrupt file: %v", err)
	}
}

func TestAfter(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	ran := make(chan bool, 2)
	simkit.After(ctx, &wg, time.Millisecond, func() { ran <- true })
	wg.Wait()
	if len(ran) != 1 {
		t.Fatal("f did not run after d")
	}
	simkit.After(ctx, &wg, time.Hour, func() { ran <- true })
	cancel()
	wg.Wait() // returns at once: the wait ended with ctx
	if len(ran) != 1 {
		t.Fatal("f ran after ctx ended")
	}
}
