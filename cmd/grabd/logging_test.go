package main

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// lockedBuffer is a log's destination that the buffer's own goroutine may
// write while the test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.b.String()
	if s == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}

// Info lines wait in the buffer; a warning is written at once, with every
// line before it, in order; stopping writes what is left.
func TestLogBuffersInfoUntilAWarningOrStop(t *testing.T) {
	var out lockedBuffer
	log, stop := newLogger(&out, slog.LevelInfo, time.Hour) // the timer never fires here
	log.Info("first")
	log.Debug("below the level")
	if got := out.lines(); len(got) != 0 {
		t.Fatalf("info line written before a flush: %q", got)
	}
	log.With("k", "v").Warn("second")
	got := out.lines()
	if len(got) != 2 || !strings.Contains(got[0], `"msg":"first"`) || !strings.Contains(got[1], `"msg":"second"`) ||
		!strings.Contains(got[1], `"k":"v"`) {
		t.Fatalf("after the warning: %q", got)
	}
	log.Info("third")
	if n := len(out.lines()); n != 2 {
		t.Fatalf("%d lines before stop, want 2", n)
	}
	stop()
	if got := out.lines(); len(got) != 3 || !strings.Contains(got[2], `"msg":"third"`) {
		t.Fatalf("after stop: %q", got)
	}
}

// The timer writes an info line within the flush period.
func TestLogFlushesOnItsPeriod(t *testing.T) {
	var out lockedBuffer
	log, stop := newLogger(&out, slog.LevelInfo, 10*time.Millisecond)
	defer stop()
	log.Info("first")
	deadline := time.Now().Add(10 * time.Second)
	for len(out.lines()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the info line was never written")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := out.lines(); len(got) != 1 || !strings.Contains(got[0], `"msg":"first"`) {
		t.Fatalf("%q", got)
	}
}

// Off: every line is written as it is logged.
func TestLogUnbuffered(t *testing.T) {
	var out lockedBuffer
	log, stop := newLogger(&out, slog.LevelInfo, 0)
	defer stop()
	log.Info("first")
	if got := out.lines(); len(got) != 1 {
		t.Fatalf("%q", got)
	}
}

// After stop the buffer's timer is gone: an info line logged then (a
// goroutine still ending) is written at once, as newLogger promises, not
// left in a buffer nothing flushes any more.
func TestLogAfterStopIsWrittenAtOnce(t *testing.T) {
	var out lockedBuffer
	log, stop := newLogger(&out, slog.LevelInfo, time.Hour)
	log.Info("before")
	stop()
	log.Info("after")
	log.With("k", "v").Info("after, with")
	got := out.lines()
	if len(got) != 3 || !strings.Contains(got[0], `"msg":"before"`) || !strings.Contains(got[1], `"msg":"after"`) ||
		!strings.Contains(got[2], `"k":"v"`) {
		t.Fatalf("after stop: %q", got)
	}
	stop() // a second stop is harmless
	log.Info("last")
	if got := out.lines(); len(got) != 4 || !strings.Contains(got[3], `"msg":"last"`) {
		t.Fatalf("after a second stop: %q", got)
	}
}

// syncCounter is a log destination with a Sync, as *os.File has: fsync.
type syncCounter struct {
	lockedBuffer
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
	if got, n := out.lines(), out.syncs.Load(); len(got) != 4 || n != 0 {
		t.Fatalf("%d lines, %d syncs of the destination; want 4, 0: %q", len(got), n, got)
	}
}
