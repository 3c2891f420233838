package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/grab-engine/grab/engine/transfer"
	"github.com/grab-engine/grab/engine/transfersim"
)

const secret = "sim-test-secret"

// TestMain runs the command itself when a test starts this binary as it.
func TestMain(m *testing.M) {
	if os.Getenv("TRANSFERSIM_TEST_MAIN") == "1" {
		os.Args = append([]string{"transfersim"}, strings.Fields(os.Getenv("TRANSFERSIM_TEST_ARGS"))...)
		main()
		return
	}
	os.Exit(m.Run())
}

func getenv(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestParseConfig(t *testing.T) {
	withSecret := map[string]string{"GRAB_TRANSFER_SECRET": secret}
	cfg, err := ParseConfig(nil, getenv(withSecret))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Addr != DefaultAddr || cfg.Secret != secret || cfg.Faults != (transfersim.Faults{}) || cfg.Seed != 0 || cfg.LogLevel != slog.LevelInfo {
		t.Errorf("defaults = %+v", cfg)
	}

	env := map[string]string{"GRAB_TRANSFER_SECRET": secret, "TRANSFERSIM_ADDR": "127.0.0.1:9000",
		"TRANSFERSIM_ERROR_RATE": "0.25", "TRANSFERSIM_LOST_REPLY_RATE": "0.5", "TRANSFERSIM_DUPLICATE_RATE": "1",
		"TRANSFERSIM_LATENCY": "20ms", "TRANSFERSIM_SEED": "7", "TRANSFERSIM_LOG_LEVEL": "warn"}
	cfg, err = ParseConfig(nil, getenv(env))
	if err != nil {
		t.Fatal(err)
	}
	want := transfersim.Faults{ErrorRate: 0.25, LoseReplyRate: 0.5, DuplicateRate: 1, Latency: 20 * time.Millisecond}
	if cfg.Addr != "127.0.0.1:9000" || cfg.Faults != want || cfg.Seed != 7 || cfg.LogLevel != slog.LevelWarn {
		t.Errorf("from the environment = %+v", cfg)
	}

	cfg, err = ParseConfig([]string{"-addr", ":0", "-error-rate", "0.1", "-lost-reply-rate", "0", "-duplicate-rate", "0.3",
		"-latency", "1s", "-seed", "9", "-log-level", "debug"}, getenv(env))
	if err != nil {
		t.Fatal(err)
	}
	want = transfersim.Faults{ErrorRate: 0.1, DuplicateRate: 0.3, Latency: time.Second}
	if cfg.Addr != ":0" || cfg.Faults != want || cfg.Seed != 9 || cfg.LogLevel != slog.LevelDebug {
		t.Errorf("flags over the environment = %+v", cfg)
	}

	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"no secret", map[string]string{}, nil, "GRAB_TRANSFER_SECRET"},
		{"secret as a flag", map[string]string{}, []string{"-secret", "x"}, "-secret"},
		{"rate above 1", withSecret, []string{"-error-rate", "1.5"}, "TRANSFERSIM_ERROR_RATE"},
		{"negative rate", withSecret, []string{"-lost-reply-rate", "-0.1"}, "TRANSFERSIM_LOST_REPLY_RATE"},
		{"NaN rate", withSecret, []string{"-duplicate-rate", "NaN"}, "TRANSFERSIM_DUPLICATE_RATE"},
		{"rate not a number", map[string]string{"GRAB_TRANSFER_SECRET": secret, "TRANSFERSIM_ERROR_RATE": "half"}, nil, "TRANSFERSIM_ERROR_RATE"},
		{"negative latency", withSecret, []string{"-latency", "-1s"}, "TRANSFERSIM_LATENCY"},
		{"latency not a duration", withSecret, []string{"-latency", "5"}, "TRANSFERSIM_LATENCY"},
		{"bad address", withSecret, []string{"-addr", "8081"}, "TRANSFERSIM_ADDR"},
		{"bad seed", withSecret, []string{"-seed", "-1"}, "TRANSFERSIM_SEED"},
		{"bad log level", withSecret, []string{"-log-level", "loud"}, "TRANSFERSIM_LOG_LEVEL"},
		{"extra argument", withSecret, []string{"serve"}, "unexpected arguments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig(tc.args, getenv(tc.env))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one naming %s", err, tc.want)
			}
		})
	}
}

func TestMainBadConfigExits2(t *testing.T) {
	var stderr bytes.Buffer
	if code := Main(context.Background(), []string{"-error-rate", "2"}, getenv(map[string]string{"GRAB_TRANSFER_SECRET": secret}), &stderr); code != 2 {
		t.Fatalf("exit code %d, want 2", code)
	}
	if !strings.Contains(stderr.String(), "TRANSFERSIM_ERROR_RATE") {
		t.Errorf("stderr %q does not name the setting", stderr.String())
	}
}

// syncBuffer is a log sink the server's goroutines and the test share.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// logLines decodes the JSON log lines whose message is msg.
func (b *syncBuffer) logLines(t *testing.T, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for line := range strings.Lines(b.String()) {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q is not JSON: %v", line, err)
		}
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// start runs transfersim with faults on a loopback port and returns a
// production client of it, its base URL, its log and a stop that waits for
// Run to return and fails the test on its error.
func start(t *testing.T, faults transfersim.Faults) (*transfer.Client, string, *syncBuffer, func()) {
	t.Helper()
	cfg := Config{Addr: "127.0.0.1:0", Secret: secret, Faults: faults, Seed: 1}
	addrs := make(chan net.Addr, 1)
	cfg.onListen = func(a net.Addr) { addrs <- a }
	logs := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, slog.New(slog.NewJSONHandler(logs, nil))) }()
	var base string
	select {
	case a := <-addrs:
		base = "http://" + a.String()
	case err := <-done:
		cancel()
		t.Fatalf("Run: %v", err)
	}
	hc := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(hc.CloseIdleConnections)
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	t.Cleanup(stop)
	return transfer.NewClient(base, []byte(secret), 2*time.Second, hc), base, logs, stop
}

func getStats(t *testing.T, base string) Stats {
	t.Helper()
	resp, err := http.Get(base + PathStats)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st Stats
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("stats: %d, %v", resp.StatusCode, err)
	}
	return st
}

var award = transfer.Transfer{OutTradeNo: "cp7-42", UserID: 42, Amount: 123, Memo: "campaign 7"}

func TestRunServesTheClient(t *testing.T) {
	ctx := context.Background()
	c, base, logs, stop := start(t, transfersim.Faults{})

	res, err := c.Transfer(ctx, award)
	if err != nil {
		t.Fatal(err)
	}
	if res.Outcome != transfer.Succeeded || res.Amount != 123 || res.Duplicate || res.TransferID == "" {
		t.Fatalf("transfer = %+v, want succeeded for 123 fen with an id", res)
	}
	again, err := c.Transfer(ctx, award)
	if err != nil || !again.Duplicate || again.TransferID != res.TransferID {
		t.Fatalf("repeat = %+v, %v; want the first transfer as a duplicate", again, err)
	}
	if q, err := c.QueryTransfer(ctx, award.OutTradeNo); err != nil || q.TransferID != res.TransferID || q.Duplicate {
		t.Fatalf("query = %+v, %v", q, err)
	}
	if q, err := c.QueryTransfer(ctx, "never-sent"); err != nil || q.Outcome != transfer.Unknown {
		t.Fatalf("query of an unknown number = %+v, %v; want unknown", q, err)
	}
	other := award
	other.Amount++
	if _, err := c.Transfer(ctx, other); !errors.Is(err, transfer.ErrConflict) {
		t.Fatalf("conflict: err = %v", err)
	}
	wrong := transfer.NewClient(base, []byte("another secret"), time.Second, nil)
	if _, err := wrong.Transfer(ctx, award); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("wrongly signed transfer: err = %v, want a 401", err)
	}
	if st := getStats(t, base); st != (Stats{Transfers: 1, Applied: 1, Amount: "1.23", MaxApplications: 1}) {
		t.Errorf("stats = %+v", st)
	}
	stop()

	reqs := logs.logLines(t, "request")
	if len(reqs) != 6 {
		t.Fatalf("%d request log lines, want 6:\n%s", len(reqs), logs)
	}
	first := reqs[0]
	if first["method"] != "POST" || first["out_trade_no"] != "cp7-42" || first["user_id"] != 42.0 ||
		first["amount"] != "1.23" || first["status"] != 200.0 || first["duplicate"] != nil {
		t.Errorf("first request logged as %v", first)
	}
	if reqs[1]["duplicate"] != true || reqs[2]["method"] != "GET" || reqs[2]["out_trade_no"] != "cp7-42" {
		t.Errorf("repeat and query logged as %v, %v", reqs[1], reqs[2])
	}
	if reqs[3]["status"] != 404.0 || reqs[3]["error"] != "not_found" || reqs[4]["status"] != 409.0 || reqs[4]["error"] != "conflict" ||
		reqs[5]["status"] != 401.0 || reqs[5]["error"] != "unauthorized" {
		t.Errorf("refusals logged as %v, %v, %v", reqs[3], reqs[4], reqs[5])
	}
	if strings.Contains(logs.String(), secret) || strings.Contains(logs.String(), transfer.HeaderSignature) {
		t.Errorf("the log shows the secret or a signature:\n%s", logs)
	}
	end := logs.logLines(t, "transfersim stopped")
	if len(end) != 1 || end[0]["applied"] != 1.0 || end[0]["amount"] != "1.23" || end[0]["max_applications"] != 1.0 {
		t.Errorf("stop line = %v", end)
	}
}

func TestRunInjectsFaults(t *testing.T) {
	ctx := context.Background()
	t.Run("errors", func(t *testing.T) {
		c, base, logs, stop := start(t, transfersim.Faults{ErrorRate: 1})
		if _, err := c.Transfer(ctx, award); err == nil || !strings.Contains(err.Error(), "503") {
			t.Fatalf("err = %v, want a 503", err)
		}
		if st := getStats(t, base); st.Applied != 0 {
			t.Errorf("stats = %+v, want nothing applied", st)
		}
		stop()
		if reqs := logs.logLines(t, "request"); len(reqs) != 1 || reqs[0]["status"] != 503.0 || reqs[0]["error"] != "unavailable" {
			t.Errorf("logged %v", reqs)
		}
	})
	t.Run("lost replies", func(t *testing.T) {
		c, base, logs, stop := start(t, transfersim.Faults{LoseReplyRate: 1})
		if _, err := c.Transfer(ctx, award); err == nil {
			t.Fatal("a dropped reply answered")
		}
		// The transfer was applied all the same: that is the fault.
		if st := getStats(t, base); st.Applied != 1 || st.MaxApplications != 1 {
			t.Errorf("stats = %+v, want the transfer applied once", st)
		}
		if _, err := c.QueryTransfer(ctx, award.OutTradeNo); err == nil {
			t.Fatal("a dropped query reply answered")
		}
		stop()
		dropped := logs.logLines(t, "request: reply dropped")
		if len(dropped) != 2 || dropped[0]["out_trade_no"] != "cp7-42" || dropped[1]["method"] != "GET" {
			t.Errorf("logged %v", dropped)
		}
	})
	t.Run("duplicates and latency", func(t *testing.T) {
		c, base, _, _ := start(t, transfersim.Faults{DuplicateRate: 1, Latency: 20 * time.Millisecond})
		for i := range 3 {
			if _, err := c.Transfer(ctx, award); err != nil {
				t.Fatalf("transfer %d: %v", i, err)
			}
		}
		if st := getStats(t, base); st != (Stats{Transfers: 1, Applied: 1, Amount: "1.23", MaxApplications: 1}) {
			t.Errorf("stats = %+v, want money moved once", st)
		}
	})
}

// TestSIGTERM runs the command as a process: it listens, pays through the
// client, and exits 0 on SIGTERM.
func TestSIGTERM(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "TRANSFERSIM_TEST_MAIN=1", "TRANSFERSIM_TEST_ARGS=-addr 127.0.0.1:0 -seed 3",
		"GRAB_TRANSFER_SECRET="+secret)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	lines := make(chan string, 100)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	var all []string
	next := func() string {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("transfersim exited; it logged:\n%s", strings.Join(all, "\n"))
			}
			all = append(all, l)
			return l
		case <-time.After(10 * time.Second):
			t.Fatalf("no log line in 10s; it logged:\n%s", strings.Join(all, "\n"))
		}
		return ""
	}
	var listening struct {
		Msg  string `json:"msg"`
		Addr string `json:"addr"`
		Seed uint64 `json:"seed"`
	}
	if err := json.Unmarshal([]byte(next()), &listening); err != nil || listening.Addr == "" || listening.Seed != 3 {
		t.Fatalf("first line %+v, %v; want the listening address and seed 3", listening, err)
	}
	c := transfer.NewClient("http://"+listening.Addr, []byte(secret), 2*time.Second, nil)
	if _, err := c.Transfer(context.Background(), award); err != nil {
		t.Fatal(err)
	}
	if l := next(); !strings.Contains(l, `"out_trade_no":"cp7-42"`) {
		t.Fatalf("request logged as %s", l)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if l := next(); !strings.Contains(l, `"msg":"transfersim stopped"`) || !strings.Contains(l, `"applied":1`) {
		t.Fatalf("stop logged as %s", l)
	}
	for range lines {
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v, want 0", err)
	}
}
