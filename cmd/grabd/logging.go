package main

import (
	"context"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"go.uber.org/zap/zapcore"
)

// logBufferSize is how much of the log waits in memory at most: a burst
// of access lines is written in 256 KiB pieces rather than line by line.
const logBufferSize = 256 << 10

// newLogger writes JSON lines at level to out. With flush > 0 the lines
// wait in a buffer (zapcore.BufferedWriteSyncer) for at most flush, so
// that an access line per request does not cost a write system call per
// request; warnings and errors flush the buffer at once, so they are never
// late and never lost to a crash of grabd that follows them (flushing
// hands them to the OS; out is never fsynced). stop flushes and ends
// the buffer's timer; lines logged after it are written at once.
func newLogger(out io.Writer, level slog.Level, flush time.Duration) (log *slog.Logger, stop func()) {
	opts := &slog.HandlerOptions{Level: level}
	if flush <= 0 {
		return slog.New(slog.NewJSONHandler(out, opts)), func() {}
	}
	// struct{ io.Writer } hides out's own Sync: on an *os.File that is an
	// fsync, which the buffer would make at every flush and warning.
	ws := &zapcore.BufferedWriteSyncer{WS: zapcore.AddSync(struct{ io.Writer }{out}), Size: logBufferSize, FlushInterval: flush}
	h := syncHandler{slog.NewJSONHandler(ws, opts), ws, new(atomic.Bool)}
	return slog.New(h), func() {
		// Stopped first: a record that misses it is flushed by Stop.
		h.stopped.Store(true)
		_ = ws.Stop()
	}
}

// syncHandler flushes its buffer after every record at warning or above,
// and after every record once stopped: the buffer's timer is gone then,
// and nothing else would write what waits in it.
type syncHandler struct {
	slog.Handler
	ws      zapcore.WriteSyncer
	stopped *atomic.Bool
}

// Handle implements slog.Handler.
func (h syncHandler) Handle(ctx context.Context, r slog.Record) error {
	err := h.Handler.Handle(ctx, r)
	if r.Level >= slog.LevelWarn || h.stopped.Load() {
		if serr := h.ws.Sync(); err == nil {
			err = serr
		}
	}
	return err
}

// WithAttrs implements slog.Handler.
func (h syncHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return syncHandler{h.Handler.WithAttrs(as), h.ws, h.stopped}
}

// WithGroup implements slog.Handler.
func (h syncHandler) WithGroup(name string) slog.Handler {
	return syncHandler{h.Handler.WithGroup(name), h.ws, h.stopped}
}
