package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/grab-engine/grab/engine/money"

	"github.com/grab-engine/grab/engine/transfer"
	"github.com/grab-engine/grab/engine/transfersim"
)

// PathStats answers what the simulator has applied, unsigned: a fault test
// reads it to check that no out-trade-no moved money twice.
const PathStats = "/sim/stats"

// Stats is the body of GET /sim/stats.
type Stats struct {
	Transfers int    `json:"transfers"` // out-trade-nos held
	Applied   int    `json:"applied"`   // times money moved
	Amount    string `json:"amount"`    // how much moved, yuan
	// MaxApplications is the most times money moved for one number: 1 (or
	// 0 before any transfer) when the service is correct.
	MaxApplications int `json:"max_applications"`
}

// Run serves the simulator on cfg.Addr until ctx ends, then lets requests in
// flight finish and logs what it applied.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	seed := cfg.Seed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	sim := transfersim.New([]byte(cfg.Secret), cfg.Faults, seed)
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return err
	}
	if cfg.onListen != nil {
		cfg.onListen(ln.Addr())
	}
	log.Info("transfersim listening: a simulator, no money moves", "addr", ln.Addr().String(),
		"error_rate", cfg.Faults.ErrorRate, "lost_reply_rate", cfg.Faults.LoseReplyRate,
		"duplicate_rate", cfg.Faults.DuplicateRate, "latency", cfg.Faults.Latency.String(), "seed", seed)
	err = transfersim.Serve(ctx, ln, handler(sim, log))
	st := stats(sim)
	log.Info("transfersim stopped", "transfers", st.Transfers, "applied", st.Applied, "amount", st.Amount,
		"max_applications", st.MaxApplications)
	return err
}

// handler is the simulator behind a request log, beside its stats route
// (not logged: a test may poll it).
func handler(sim *transfersim.Sim, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+PathStats, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(stats(sim))
	})
	mux.Handle("/", logRequests(sim, log))
	return mux
}

func stats(sim *transfersim.Sim) Stats {
	n, fen := sim.TotalApplied()
	return Stats{Transfers: len(sim.Transfers()), Applied: n, Amount: money.Format(fen),
		MaxApplications: sim.MaxApplications()}
}

// logRequests logs one line per request: what it asked for (method, path,
// the transfer's number, user and amount) and what it got (status, the error
// code or whether it was a duplicate, the time taken), or that its reply was
// dropped. Headers are never logged: they carry the signature.
func logRequests(next http.Handler, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		attrs := []any{"method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr}
		if r.Method == http.MethodPost && r.URL.Path == transfer.PathTransfers {
			// Read what the simulator will read (it bounds the body itself).
			body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10+1))
			r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(body), r.Body))
			var req transfer.Request
			if err == nil && json.Unmarshal(body, &req) == nil {
				attrs = append(attrs, "out_trade_no", req.OutTradeNo, "user_id", req.UserID, "amount", req.Amount)
			}
		} else if no, ok := strings.CutPrefix(r.URL.Path, transfer.PathTransfers+"/"); ok {
			attrs = append(attrs, "out_trade_no", no)
		}
		rec := &recorder{ResponseWriter: w}
		defer func() {
			attrs = append(attrs, "ms", time.Since(start).Milliseconds())
			if p := recover(); p != nil {
				// The simulator drops a reply by aborting the handler.
				log.Info("request: reply dropped", attrs...)
				panic(p)
			}
			attrs = append(attrs, "status", rec.status)
			var reply struct {
				Error     string `json:"error"`
				Duplicate bool   `json:"duplicate"`
			}
			if json.Unmarshal(rec.head.Bytes(), &reply) == nil {
				if reply.Error != "" {
					attrs = append(attrs, "error", reply.Error)
				}
				if reply.Duplicate {
					attrs = append(attrs, "duplicate", true)
				}
			}
			log.Info("request", attrs...)
		}()
		next.ServeHTTP(rec, r)
	})
}

// recorder keeps an answer's status and the start of its body.
type recorder struct {
	http.ResponseWriter
	status int
	head   bytes.Buffer
}

func (r *recorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
	r.ResponseWriter.WriteHeader(status)
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	if room := 1024 - r.head.Len(); room > 0 {
		r.head.Write(p[:min(room, len(p))])
	}
	return r.ResponseWriter.Write(p)
}
