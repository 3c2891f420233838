package main

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func lines(b *bytes.Buffer) []string {
	if b.Len() == 0 {
		return nil
	}
	return strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
}

// Info lines wait in the buffer; a warning is written at once, with every
// line before it, in order; stopping writes what is left. (The flush
// period is an hour: only the test's own calls write to out.)
func TestLogBuffersInfoUntilAWarningOrStop(t *testing.T) {
	var out bytes.Buffer
	log, stop := newLogger(&out, slog.LevelInfo, time.Hour)
	log.Info("first")
	log.Debug("below the level")
	if got := lines(&out); len(got) != 0 {
		t.Fatalf("info line written before a flush: %q", got)
	}
	log.With("k", "v").Warn("second")
	got := lines(&out)
	if len(got) != 2 || !strings.Contains(got[0], `"msg":"first"`) || !strings.Contains(got[1], `"msg":"second"`) ||
		!strings.Contains(got[1], `"k":"v"`) {
		t.Fatalf("after the warning: %q", got)
	}
	log.Info("third")
	if n := len(lines(&out)); n != 2 {
		t.Fatalf("%d lines before stop, want 2", n)
	}
	stop()
	if got := lines(&out); len(got) != 3 || !strings.Contains(got[2], `"msg":"third"`) {
		t.Fatalf("after stop: %q", got)
	}
}

// writes hands each write to the test.
type writes chan []byte

func (w writes) Write(p []byte) (int, error) {
	w <- bytes.Clone(p)
	return len(p), nil
}

// The buffer's timer writes an info line within the flush period.
func TestLogFlushesOnItsPeriod(t *testing.T) {
	out := make(writes, 1)
	log, stop := newLogger(out, slog.LevelInfo, 10*time.Millisecond)
	defer stop()
	log.Info("first")
	select {
	case b := <-out:
		if !strings.Contains(string(b), `"msg":"first"`) || strings.Count(string(b), "\n") != 1 {
			t.Fatalf("%q", b)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the info line was never written")
	}
}

// Off: every line is written as it is logged.
func TestLogUnbuffered(t *testing.T) {
	var out bytes.Buffer
	log, stop := newLogger(&out, slog.LevelInfo, 0)
	defer stop()
	log.Info("first")
	if got := lines(&out); len(got) != 1 {
		t.Fatalf("%q", got)
	}
}
