package main

import (
	"bytes"
	"log/slog"
	"strings"
	"sync/atomic"
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

// After stop the buffer's timer is gone: an info line logged then (a
// goroutine still ending) is written at once, as newLogger promises, not
// left in a buffer nothing flushes any more.
func TestLogAfterStopIsWrittenAtOnce(t *testing.T) {
	var out bytes.Buffer
	log, stop := newLogger(&out, slog.LevelInfo, time.Hour)
	log.Info("before")
	stop()
	log.Info("after")
	log.With("k", "v").Info("after, with")
	got := lines(&out)
	if len(got) != 3 || !strings.Contains(got[0], `"msg":"before"`) || !strings.Contains(got[1], `"msg":"after"`) ||
		!strings.Contains(got[2], `"k":"v"`) {
		t.Fatalf("after stop: %q", got)
	}
	stop() // a second stop is harmless
	log.Info("last")
	if got := lines(&out); len(got) != 4 || !strings.Contains(got[3], `"msg":"last"`) {
		t.Fatalf("after a second stop: %q", got)
	}
}

// syncCounter is a log destination with a Sync, as *os.File has: fsync.
type syncCounter struct {
	bytes.Buffer
	syncs atomic.Int64
}

func (s *syncCounter) Sync() error {
	s.syncs.Add(1)
	return nil
}

// The buffer writes its lines to the destination and never asks it to
// Sync: on os.Stderr redirected to a file that is an fsync, 10 a second
// at the default period even when idle and one per warning, where the
// unbuffered log made none. A line handed to the OS is as safe from a
// crash of grabd as the unbuffered log's.
func TestLogNeverSyncsItsDestination(t *testing.T) {
	var out syncCounter
	log, stop := newLogger(&out, slog.LevelInfo, time.Hour) // flushed by the warning, the stop and after it
	log.Info("first")
	log.Warn("second")
	log.Info("third")
	stop()
	log.Info("fourth")
	if got, n := lines(&out.Buffer), out.syncs.Load(); len(got) != 4 || n != 0 {
		t.Fatalf("%d lines, %d syncs of the destination; want 4, 0: %q", len(got), n, got)
	}
}

// The transfer service's line says its timeout as people write it, as the
// settings do (3s), not in nanoseconds (3000000000).
func TestTransferServiceLogsItsTimeoutReadably(t *testing.T) {
	var out bytes.Buffer
	log, stop := newLogger(&out, slog.LevelInfo, 0)
	defer stop()
	cfg := defaultConfig()
	cfg.TransferURL, cfg.TransferSecret, cfg.Engine.TransferTimeout = "https://wallet.internal/api", "t", 3*time.Second
	_, stopXfer, err := transferService(t.Context(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	stopXfer()
	if got := lines(&out); len(got) != 1 || !strings.Contains(got[0], `"timeout":"3s"`) {
		t.Fatalf("%q", got)
	}
}
