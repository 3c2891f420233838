// Command transfersim serves the wallet transfer service simulator on its own,
// so that a production-mode grabd can pay campaign awards through it over the
// network and be fault-tested from outside its process: the simulator fails
// requests, drops replies after applying, delivers requests twice and answers
// late, at the rates it is given.
//
// It speaks the protocol of engine/transfer (POST /v1/transfers, GET
// /v1/transfers/{out_trade_no}, HMAC-signed with the shared secret) and keeps
// its transfers in memory: a restart forgets them. GET /sim/stats answers what
// it has applied, and the last log line before it exits says the same.
//
//	GRAB_TRANSFER_SECRET=s3cret transfersim -addr 127.0.0.1:8090 -error-rate 0.2 -lost-reply-rate 0.1
//
// Settings come from flags, else from the environment (TRANSFERSIM_ADDR,
// TRANSFERSIM_ERROR_RATE, TRANSFERSIM_LOST_REPLY_RATE,
// TRANSFERSIM_DUPLICATE_RATE, TRANSFERSIM_LATENCY, TRANSFERSIM_SEED,
// TRANSFERSIM_LOG_LEVEL); the secret comes from GRAB_TRANSFER_SECRET only, the
// variable grabd reads, so it stays out of the process list. SIGINT or SIGTERM
// stops it.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
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

// Main parses the configuration and serves the simulator until ctx ends. It
// returns the exit code: 2 for a bad configuration, 1 when serving fails, 0
// after a clean stop.
func Main(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) int {
	cfg, err := ParseConfig(args, getenv)
	if err != nil {
		fmt.Fprintf(stderr, "transfersim: %v\n", err)
		return 2
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	if err := Run(ctx, cfg, log); err != nil {
		log.Error("transfersim failed", "err", err)
		return 1
	}
	return 0
}
