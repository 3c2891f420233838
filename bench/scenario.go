// Package bench is the load harness behind cmd/grabbench: scenarios, the
// engines under test and their baselines (the raw probe scripts, the naive
// MySQL-lock schemes), the load loop with its histograms, the invariant
// audit of MySQL after each run, and the reports (table, JSON, PNG).
//
// Every scenario (group-storm, flash-sale, campaign) is a Scenario, and Run
// drives each the same way: it configures one engine for the comparison,
// then for each engine under test it prepares a Trial, loads it, waits for
// its writes (Drain), finishes what it left unfinished (Settle) and audits
// it.
package bench

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/grab-engine/grab"

	"github.com/grab-engine/grab/engine/packet"

	"github.com/grab-engine/grab/engine"
)

// Op is one request of a workload: user User grabs from Target (a packet id
// for packet scenarios, a campaign id for campaign; for flash-sale, buyer
// User orders one of SKU Target).
type Op struct {
	Target int64
	User   int64
}

// Plan is the requests of one engine's run.
type Plan struct {
	Ops         int64
	Op          func(i int64) Op // the i-th request of the run
	Concurrency int
	// Unit is what the report calls the requests, plural ("" is "grabs").
	Unit string
}

// unit is what reports call the plan's requests.
func (p Plan) unit() string {
	if p.Unit == "" {
		return "grabs"
	}
	return p.Unit
}

// Scenario is a workload, run on each engine in turn.
type Scenario interface {
	Name() string
	// Params describe the scenario in the report.
	Params() map[string]any
	// Configure adjusts the one engine Run makes for every trial, before it
	// is made: what the harness does not give it (campaign: a transfer
	// service, its rate, and a payout sweeper that drives an award again at once;
	// group-storm paid through a channel: that channel's provider).
	Configure(*grab.Deps, *engine.Config)
	// Prepare sets up what one engine's run needs, fresh (packets, stock or
	// a campaign of its own, so runs never see each other's requests). env
	// sets up through grabd's API (HTTPSetup) when the http engine is an
	// external grabd.
	Prepare(ctx context.Context, env *Env, engineName string) (Trial, error)
}

// Trial is one engine's run of a scenario, as Prepare set it up. Run calls
// Plan and Report, serves the plan's requests with Grabber, then calls
// Drain (only for the engines with a writer in-process), Settle and Audit.
type Trial interface {
	// Plan is the requests of the run.
	Plan() Plan
	// Report is what the trial adds to the report's scenario params (the
	// Redis bytes of an open packet); a param an earlier trial gave stays.
	Report(ctx context.Context) map[string]any
	// Grabber makes the engine under test. For the http engine, api is
	// grabd's API (its handler in-process on loopback, or the external
	// grabd) with an admin token.
	Grabber(api HTTPSetup) (Grabber, error)
	// Drain waits until the requests answered OK (accepted) are durable in
	// MySQL, at most timeout.
	Drain(ctx context.Context, accepted int64, timeout time.Duration) error
	// Settle, after the drain, finishes what the requests left unfinished
	// (campaign: the payout pool's last payouts, then those whose transfer
	// failed or went unanswered;
	// group-storm paid through a channel: the payments) and reports how many
	// sweeps that took; Run times it. ErrNothingToSettle: the run leaves
	// nothing to finish, and the report has no settle time for it.
	Settle(ctx context.Context) (sweeps int, err error)
	// Audit checks the run after the settle: the answers of load against
	// what could succeed, and, when it reports audited, the run's own
	// records (counters in Redis and MySQL). Run audits the whole database
	// besides, for the engines that write to it.
	Audit(ctx context.Context, load Load) (violations []string, audited bool, err error)
}

// ErrNothingToSettle is Trial.Settle's answer for a run that leaves nothing
// unfinished.
var ErrNothingToSettle = errors.New("bench: nothing to settle")

// Setup is how a scenario makes accounts, groups and paid packets: through
// the engine in-process, or through grabd's admin and user API.
type Setup interface {
	Deposit(ctx context.Context, userID, fen int64, ref string) error
	SetGroupMembers(ctx context.Context, groupID int64, users []int64) error
	// SendAndPay creates a group_lucky packet and pays it by balance.
	SendAndPay(ctx context.Context, senderID, groupID int64, count int, fen int64) (int64, error)
}

// EngineSetup sets up through the engine in-process.
type EngineSetup struct{ E *packet.Service }

// Deposit implements Setup.
func (s EngineSetup) Deposit(ctx context.Context, userID, fen int64, ref string) error {
	_, err := s.E.Deposit(ctx, userID, fen, ref)
	return err
}

// SetGroupMembers implements Setup.
func (s EngineSetup) SetGroupMembers(ctx context.Context, groupID int64, users []int64) error {
	_, err := s.E.SetGroupMembers(ctx, groupID, users)
	return err
}

// SendAndPay implements Setup.
func (s EngineSetup) SendAndPay(ctx context.Context, senderID, groupID int64, count int, fen int64) (int64, error) {
	p, err := s.E.CreatePacket(ctx, packet.NewPacket{SenderID: senderID, Kind: packet.KindGroupLucky,
		GroupID: groupID, Count: count, Amount: fen})
	if err != nil {
		return 0, err
	}
	if _, err := s.E.PayByBalance(ctx, p.ID, senderID); err != nil {
		return 0, err
	}
	return p.ID, nil
}

// prepared numbers the runs a process prepares, so each has users, a group,
// an activity or a probe of its own.
var prepared atomic.Int64

// parallel calls fn for 0..n-1 from `workers` goroutines; the first error wins.
func parallel(ctx context.Context, n, workers int, fn func(context.Context, int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1) - 1; i < int64(n) && ctx.Err() == nil; i = next.Add(1) - 1 {
				if err := fn(ctx, int(i)); err != nil {
					once.Do(func() { first = err })
					next.Store(int64(n))
					return
				}
			}
		}()
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}
