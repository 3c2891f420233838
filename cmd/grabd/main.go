// Command grabd serves the grab HTTP API. With REDIS_ADDR and MYSQL_DSN it
// runs in production mode; with neither, in the embedded mode (in-process
// Redis and an SQLite file) for trying it on a bare machine.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := Main(ctx, os.Args[1:], os.Getenv, os.Stderr)
	stop()
	os.Exit(code)
}

// Main parses the configuration and runs grabd until ctx ends. It returns the
// exit code: 2 for a bad configuration, 1 when serving fails, 0 after a clean
// stop or -h (the flags' usage on stderr).
func Main(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) int {
	cfg, err := ParseConfig(args, getenv)
	var help helpError
	if errors.As(err, &help) {
		fmt.Fprint(stderr, help.Error())
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "grabd: %v\n", err)
		return 2
	}
	log, stopLog := newLogger(stderr, cfg.LogLevel, cfg.LogFlush)
	defer stopLog()
	if err := Run(ctx, cfg, log); err != nil {
		log.Error("grabd failed", "err", err)
		return 1
	}
	return 0
}
