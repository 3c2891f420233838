// Package transfersim is a wallet transfer service simulator with fault
// injection. It serves the protocol of engine/transfer over HTTP, so tests
// and the bench drive the production client against it: requests fail,
// answers come late or never, and the network duplicates requests, while
// the counters show whether money ever moved twice.
package transfersim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/grab-engine/grab/engine/transfer"
)

// maxBody bounds a request body; real ones are a few hundred bytes.
const maxBody = 64 << 10

// Faults shape how the simulator answers. The zero value answers every
// request at once and correctly.
type Faults struct {
	ErrorRate     float64 // chance a request fails with 503 before anything is applied
	LoseReplyRate float64 // chance a request is handled (a transfer applied) and then the connection drops without an answer
	DuplicateRate float64 // chance a transfer is handled twice at once, as if the network had duplicated it
	// Latency: each request waits up to this long (random) before it is
	// handled. It is handled even if the client gave up meanwhile, as a real
	// service would: a timeout says nothing about the outcome.
	Latency time.Duration
}

// Record is what the simulator holds for one out-trade-no, with its counters.
type Record struct {
	transfer.Transfer
	TransferID string
	Applied    int // times money moved for it; a correct service keeps this at 1
	Attempts   int // requests that reached the apply step, duplicates and conflicts included
}

// Sim is a simulated transfer service; it is an http.Handler.
type Sim struct {
	secret []byte
	mux    *http.ServeMux

	mu        sync.Mutex
	faults    Faults
	rand      *rand.Rand
	lastID    int64
	transfers map[string]Record // what the service answers from
	// The ledger of money that moved, kept apart from the records so that
	// a broken check-and-set shows in it instead of overwriting its trace.
	applied  map[string]int
	attempts map[string]int
	balances map[int64]int64
	count    int
	fen      int64
	last     time.Time // when money last moved
}

// New returns a simulator that checks signatures with secret. seed drives
// the fault draws, so a run of sequential requests is repeatable.
func New(secret []byte, f Faults, seed uint64) *Sim {
	s := &Sim{secret: secret, mux: http.NewServeMux(), faults: f, rand: rand.New(rand.NewPCG(seed, 1)),
		transfers: map[string]Record{}, applied: map[string]int{}, attempts: map[string]int{}, balances: map[int64]int64{}}
	s.mux.HandleFunc("POST "+transfer.PathTransfers, s.serve(s.create))
	s.mux.HandleFunc("GET "+transfer.PathTransfers+"/{out_trade_no}", s.serve(s.query))
	return s
}

// SetFaults changes the faults for requests from now on.
func (s *Sim) SetFaults(f Faults) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = f
}

// ServeHTTP implements http.Handler.
func (s *Sim) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// ListenAndServe serves the simulator on addr until ctx ends.
func (s *Sim) ListenAndServe(ctx context.Context, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return s.Serve(ctx, ln)
}

// Serve serves the simulator on ln until ctx ends, then gives requests in
// flight a few seconds to finish.
func (s *Sim) Serve(ctx context.Context, ln net.Listener) error { return Serve(ctx, ln, s) }

// Serve serves h (the simulator, or a handler around it) on ln until ctx
// ends, then gives requests in flight a few seconds to finish.
func Serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	stop := context.AfterFunc(ctx, func() {
		grace, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		done <- srv.Shutdown(grace)
	})
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		stop()
		return err
	}
	return <-done
}

// fate is what the faults decided for one request.
type fate struct {
	wait            time.Duration
	fail, lose, dup bool
}

func (s *Sim) draw() fate {
	s.mu.Lock()
	defer s.mu.Unlock()
	var f fate
	if s.faults.Latency > 0 {
		f.wait = time.Duration(s.rand.Int64N(int64(s.faults.Latency)))
	}
	f.fail = s.chance(s.faults.ErrorRate)
	f.lose = s.chance(s.faults.LoseReplyRate)
	f.dup = s.chance(s.faults.DuplicateRate)
	return f
}

// chance draws only for a rate in use, so zero rates leave the sequence alone.
func (s *Sim) chance(rate float64) bool { return rate > 0 && s.rand.Float64() < rate }

// handler answers one verified request with a status and a JSON body.
type handler func(r *http.Request, body []byte, dup bool) (int, any)

// serve wraps h with what every request goes through: the signature check,
// then the faults.
func (s *Sim) serve(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
		if err != nil {
			writeJSON(w, http.StatusBadRequest, transfer.ErrorReply{Error: transfer.CodeMalformed, Detail: err.Error()})
			return
		}
		if err := transfer.VerifyRequest(s.secret, r, body, time.Now()); err != nil {
			writeJSON(w, http.StatusUnauthorized, transfer.ErrorReply{Error: transfer.CodeUnauthorized, Detail: err.Error()})
			return
		}
		f := s.draw()
		time.Sleep(f.wait)
		if f.fail {
			writeJSON(w, http.StatusServiceUnavailable, transfer.ErrorReply{Error: transfer.CodeUnavailable})
			return
		}
		status, reply := h(r, body, f.dup)
		if f.lose {
			// The documented way to drop the connection without an answer.
			panic(http.ErrAbortHandler)
		}
		writeJSON(w, status, reply)
	}
}

func (s *Sim) create(_ *http.Request, body []byte, dup bool) (int, any) {
	var req transfer.Request
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&req); err != nil || dec.More() {
		return http.StatusBadRequest, transfer.ErrorReply{Error: transfer.CodeMalformed, Detail: "body is not one JSON object"}
	}
	t, err := req.Transfer()
	if err != nil {
		return http.StatusBadRequest, transfer.ErrorReply{Error: transfer.CodeMalformed, Detail: err.Error()}
	}
	var copyDone sync.WaitGroup
	if dup {
		// The copy races the original, so the original may be the one
		// that finds the number applied and answers duplicate.
		copyDone.Go(func() { s.apply(t) })
	}
	rec, duplicate, ok := s.apply(t)
	copyDone.Wait()
	if !ok {
		return http.StatusConflict, transfer.ErrorReply{Error: transfer.CodeConflict}
	}
	return http.StatusOK, transfer.NewReply(rec.Transfer, rec.TransferID, duplicate)
}

func (s *Sim) query(r *http.Request, _ []byte, _ bool) (int, any) {
	no := r.PathValue("out_trade_no")
	if !transfer.ValidOutTradeNo(no) {
		return http.StatusBadRequest, transfer.ErrorReply{Error: transfer.CodeMalformed, Detail: "bad out_trade_no"}
	}
	rec, found := s.record(no)
	if !found {
		return http.StatusNotFound, transfer.ErrorReply{Error: transfer.CodeNotFound}
	}
	return http.StatusOK, transfer.NewReply(rec.Transfer, rec.TransferID, false)
}

// apply is the service's check-and-set, under one lock: a new number moves
// the money; a known one with the same user and amount answers its first
// transfer as a duplicate; a known one with other details is a conflict
// (ok false).
func (s *Sim) apply(t transfer.Transfer) (rec Record, duplicate, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.attempts[t.OutTradeNo]++
	if held, found := s.transfers[t.OutTradeNo]; found {
		if held.UserID != t.UserID || held.Amount != t.Amount {
			return Record{}, false, false
		}
		return held, true, true
	}
	s.lastID++
	s.transfers[t.OutTradeNo] = Record{Transfer: t, TransferID: fmt.Sprintf("T%010d", s.lastID)}
	s.applied[t.OutTradeNo]++
	s.balances[t.UserID] += t.Amount
	s.count++
	s.fen += t.Amount
	s.last = time.Now()
	return s.transfers[t.OutTradeNo], false, true
}

// Applied is how many times money moved for outTradeNo: 0 or 1 when the
// service is correct.
func (s *Sim) Applied(outTradeNo string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.applied[outTradeNo]
}

// Attempts is how many requests for outTradeNo reached the apply step.
func (s *Sim) Attempts(outTradeNo string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.attempts[outTradeNo]
}

// MaxApplications is the most times money moved for any one number.
func (s *Sim) MaxApplications() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	most := 0
	for _, n := range s.applied {
		most = max(most, n)
	}
	return most
}

// TotalApplied is how many times money moved, and how much in fen.
func (s *Sim) TotalApplied() (count int, fen int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count, s.fen
}

// LastApplied is when money last moved; zero before it ever has. With
// TotalApplied it gives the rate at which transfers were applied.
func (s *Sim) LastApplied() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// Balance is what userID has received, in fen.
func (s *Sim) Balance(userID int64) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.balances[userID]
}

// Transfers is a snapshot of every number the service holds.
func (s *Sim) Transfers() map[string]Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]Record, len(s.transfers))
	for no, rec := range s.transfers {
		out[no] = s.withCounts(rec)
	}
	return out
}

func (s *Sim) record(outTradeNo string) (Record, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, found := s.transfers[outTradeNo]
	return rec, found
}

// withCounts fills in rec's counters from the ledger; s.mu is held.
func (s *Sim) withCounts(rec Record) Record {
	rec.Applied, rec.Attempts = s.applied[rec.OutTradeNo], s.attempts[rec.OutTradeNo]
	return rec
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
