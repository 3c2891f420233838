package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/grab-engine/grab/engine/transfersim"
)

// Config is transfersim's configuration.
type Config struct {
	// Addr is the listen address (TRANSFERSIM_ADDR).
	Addr string
	// Secret checks the HMAC signature of every request
	// (GRAB_TRANSFER_SECRET, the environment only).
	Secret string
	// Faults are the injected faults (TRANSFERSIM_ERROR_RATE,
	// TRANSFERSIM_LOST_REPLY_RATE, TRANSFERSIM_DUPLICATE_RATE,
	// TRANSFERSIM_LATENCY).
	Faults transfersim.Faults
	// Seed drives the fault draws (TRANSFERSIM_SEED); 0 takes one from the
	// clock, and the start-up log names it so a run can be repeated.
	Seed uint64
	// LogLevel is the lowest level logged (TRANSFERSIM_LOG_LEVEL).
	LogLevel slog.Level

	// onListen, when set, is told the address the server listens on (tests use port 0).
	onListen func(net.Addr)
}

// DefaultAddr is where transfersim listens unless told otherwise: loopback,
// one port above grabd's default.
const DefaultAddr = "127.0.0.1:8081"

// ParseConfig reads the environment through getenv, then flags from args.
func ParseConfig(args []string, getenv func(string) string) (Config, error) {
	env := func(k, def string) string {
		if v := strings.TrimSpace(getenv(k)); v != "" {
			return v
		}
		return def
	}
	fs := flag.NewFlagSet("transfersim", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	addr := fs.String("addr", env("TRANSFERSIM_ADDR", DefaultAddr), "listen address (TRANSFERSIM_ADDR)")
	errRate := fs.String("error-rate", env("TRANSFERSIM_ERROR_RATE", "0"), "share of requests that fail with 503 before anything is applied, 0..1 (TRANSFERSIM_ERROR_RATE)")
	lostRate := fs.String("lost-reply-rate", env("TRANSFERSIM_LOST_REPLY_RATE", "0"), "share of requests handled (a transfer applied) whose connection then drops without an answer, 0..1 (TRANSFERSIM_LOST_REPLY_RATE)")
	dupRate := fs.String("duplicate-rate", env("TRANSFERSIM_DUPLICATE_RATE", "0"), "share of transfers handled twice at once, as if the network had duplicated them, 0..1 (TRANSFERSIM_DUPLICATE_RATE)")
	latency := fs.String("latency", env("TRANSFERSIM_LATENCY", "0s"), "each request waits up to this long (random) before it is handled (TRANSFERSIM_LATENCY)")
	seed := fs.String("seed", env("TRANSFERSIM_SEED", "0"), "seed of the fault draws; 0: from the clock (TRANSFERSIM_SEED)")
	level := fs.String("log-level", env("TRANSFERSIM_LOG_LEVEL", "info"), "debug, info, warn or error (TRANSFERSIM_LOG_LEVEL)")
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}

	c := Config{Addr: *addr, Secret: getenv("GRAB_TRANSFER_SECRET")}
	if c.Secret == "" {
		return Config{}, errors.New("GRAB_TRANSFER_SECRET is required: the secret grabd signs its requests with")
	}
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return Config{}, fmt.Errorf("TRANSFERSIM_ADDR: %q is not host:port", c.Addr)
	}
	var err error
	if c.Faults.ErrorRate, err = rate("TRANSFERSIM_ERROR_RATE", *errRate); err != nil {
		return Config{}, err
	}
	if c.Faults.LoseReplyRate, err = rate("TRANSFERSIM_LOST_REPLY_RATE", *lostRate); err != nil {
		return Config{}, err
	}
	if c.Faults.DuplicateRate, err = rate("TRANSFERSIM_DUPLICATE_RATE", *dupRate); err != nil {
		return Config{}, err
	}
	if c.Faults.Latency, err = time.ParseDuration(*latency); err != nil || c.Faults.Latency < 0 {
		return Config{}, fmt.Errorf("TRANSFERSIM_LATENCY: %q is not a duration of 0 or more", *latency)
	}
	if c.Seed, err = strconv.ParseUint(*seed, 10, 64); err != nil {
		return Config{}, fmt.Errorf("TRANSFERSIM_SEED: %q is not an unsigned integer", *seed)
	}
	if err := c.LogLevel.UnmarshalText([]byte(*level)); err != nil {
		return Config{}, fmt.Errorf("TRANSFERSIM_LOG_LEVEL: %q is not debug, info, warn or error", *level)
	}
	return c, nil
}

// rate parses a probability from 0 to 1.
func rate(name, s string) (float64, error) {
	r, err := strconv.ParseFloat(s, 64)
	if err != nil || !(r >= 0 && r <= 1) {
		return 0, fmt.Errorf("%s: %q is not a rate from 0 to 1", name, s)
	}
	return r, nil
}
