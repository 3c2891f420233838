// Package bench is the load harness behind cmd/grabbench: scenarios, the
// engines under test and their baselines (the raw probe script, the naive
// MySQL-lock scheme), the load loop with its histograms, the invariant audit
// of MySQL after each run, and the reports (table, JSON, PNG).
package bench

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/lua"
)

// Op is one request of a workload: user User grabs from Target (a packet id
// for packet scenarios, a campaign id for campaign; for flash-sale, buyer
// User orders one of SKU Target).
type Op struct {
	Target int64
	User   int64
}

// Plan is what a scenario prepared for one engine run.
type Plan struct {
	Ops         int64
	Op          func(i int64) Op // the i-th request of the run
	Concurrency int
	// Packets are the packets the run grabs from, for the drain check; empty
	// for the raw probe, which has no durable record.
	Packets []int64
	// Capacity is how many grabs can succeed at most; more OKs is an oversell.
	Capacity int64
	// Unit is what the report calls the requests, plural ("" is "grabs").
	Unit string

	// Hooks of a scenario whose requests are not packet grabs (flash-sale,
	// campaign); packet scenarios leave them nil and the harness serves them
	// itself.

	// Grabber makes the engine under test. For the http engine, api is
	// grabd's API (its handler in-process on loopback) with an admin token.
	Grabber func(engineName string, api HTTPSetup) (Grabber, error)
	// Drain waits, for the engines with a writer, until the requests
	// answered OK (accepted) are durable in MySQL; in place of the packet
	// check.
	Drain func(ctx context.Context, accepted int64, timeout time.Duration) error
	// Settle, after the drain, finishes what the run's requests left
	// unfinished (campaign: payouts whose transfer failed or went
	// unanswered) and reports how many sweeps that took; the harness times
	// it. Nil: nothing is left to finish.
	Settle func(ctx context.Context) (sweeps int, err error)
	// Check audits the run's own records after the drain (counters in
	// Redis and MySQL against the answers of load) and returns the
	// violations; with it, the answers' count against Capacity is its job.
	Check func(ctx context.Context, engineName string, load Load) ([]string, error)
}

// unit is what reports call the plan's requests.
func (p Plan) unit() string {
	if p.Unit == "" {
		return "grabs"
	}
	return p.Unit
}

// Scenario is a workload. Prepare sets up what one engine's run needs (a
// fresh set of packets, so runs never see each other's grabs) and returns
// its plan. Scenarios whose requests are not packet grabs (flash-sale,
// campaign) bring the engines that serve them, their drain and their audit
// in the plan's hooks.
type Scenario interface {
	Name() string
	// Params describe the scenario in the report.
	Params() map[string]any
	Prepare(ctx context.Context, env *Env, engineName string) (Plan, error)
}

// engineConfigurer is a scenario whose engine needs what the harness does
// not give it (campaign: a transfer service, and a payout sweeper that
// drives an award again at once). Run calls it before it makes the engine.
type engineConfigurer interface {
	configureEngine(*engine.Deps, *engine.Config)
}

// Setup is how a scenario makes accounts, groups and paid packets: through
// the engine in-process, or through grabd's admin and user API.
type Setup interface {
	Deposit(ctx context.Context, userID, fen int64, ref string) error
	SetGroupMembers(ctx context.Context, groupID int64, users []int64) error
	// SendAndPay creates a group_lucky packet and pays it by balance.
	SendAndPay(ctx context.Context, senderID, groupID int64, count int, fen int64) (int64, error)
}

// EngineSetup sets up through the engine in-process.
type EngineSetup struct{ E *engine.Engine }

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
	p, err := s.E.CreatePacket(ctx, engine.NewPacket{SenderID: senderID, Kind: engine.KindGroupLucky,
		GroupID: groupID, Count: count, Amount: fen})
	if err != nil {
		return 0, err
	}
	if _, err := s.E.PayByBalance(ctx, p.ID, senderID); err != nil {
		return 0, err
	}
	return p.ID, nil
}

// GroupStorm is P packets of N shares, each grabbed by G members of its group
// at once, from C concurrent clients: the group chat the moment a packet
// lands. Requests go packet by packet, so the clients crowd one packet at a
// time, which is the contention that matters. With G > N the late grabbers
// get SOLD_OUT.
type GroupStorm struct {
	Packets     int // P
	Shares      int // N, at most the product limit (100)
	Grabbers    int // G; with the senders, at most a group's limit (500)
	Concurrency int // C
	// UserBase offsets user and group ids, so runs against a long-lived grabd
	// do not meet users of earlier runs.
	UserBase int64
	// Pay is how the engine and http runs pay their packets (PayMethods):
	// "balance" (or empty), or a channel paid through its simulator, whose
	// notifications settle the packets while they are grabbed. The
	// mysql-lock baseline always pays by balance.
	Pay string

	payer *channelPayer
}

// paysThroughChannel reports whether the packets are paid through a channel.
func (s *GroupStorm) paysThroughChannel() bool { return s.Pay != "" && s.Pay != "balance" }

// configureEngine implements engineConfigurer: with a channel to pay
// through, the engine's provider for it is the run's simulated channel.
func (s *GroupStorm) configureEngine(d *engine.Deps, _ *engine.Config) {
	if s.paysThroughChannel() {
		s.payThrough(d)
	}
}

// prepared numbers the runs a process prepares, so each has users and a
// group of its own.
var prepared atomic.Int64

// DefaultGroupStorm finishes every engine in seconds on a 2-core machine.
func DefaultGroupStorm() *GroupStorm {
	return &GroupStorm{Packets: 200, Shares: 100, Grabbers: 200, Concurrency: 64}
}

// senders pay for the packets; several, so payments do not queue on one
// account row while the packets are set up.
const senders = 8

// shareFen is the mean share: packets of N shares hold N yuan.
const shareFen = 100

// Name implements Scenario.
func (*GroupStorm) Name() string { return "group-storm" }

// Params implements Scenario.
func (s *GroupStorm) Params() map[string]any {
	p := map[string]any{"packets": s.Packets, "shares": s.Shares, "grabbers": s.Grabbers, "concurrency": s.Concurrency}
	if s.paysThroughChannel() {
		p["pay"] = s.Pay
	}
	return p
}

// Validate reports settings the product limits would refuse.
func (s *GroupStorm) Validate() error {
	switch {
	case s.Packets <= 0 || s.Shares <= 0 || s.Grabbers <= 0 || s.Concurrency <= 0:
		return fmt.Errorf("group-storm: packets, shares, grabbers and concurrency must be positive")
	case s.Shares > engine.DefaultLimits.MaxShares:
		return fmt.Errorf("group-storm: at most %d shares a packet", engine.DefaultLimits.MaxShares)
	case s.Grabbers+senders > 500:
		return fmt.Errorf("group-storm: at most %d grabbers (a group has at most 500 members)", 500-senders)
	case s.Pay != "" && !slices.Contains(PayMethods, s.Pay):
		return fmt.Errorf("group-storm: pay is one of %s", strings.Join(PayMethods, ", "))
	}
	return nil
}

func (s *GroupStorm) plan(targets []int64, users []int64) Plan {
	g := int64(s.Grabbers)
	return Plan{
		Ops:         int64(len(targets)) * g,
		Op:          func(i int64) Op { return Op{Target: targets[i/g], User: users[i%g]} },
		Concurrency: s.Concurrency,
		Capacity:    int64(len(targets)) * int64(s.Shares),
	}
}

// Prepare implements Scenario.
func (s *GroupStorm) Prepare(ctx context.Context, env *Env, engineName string) (Plan, error) {
	if err := s.Validate(); err != nil {
		return Plan{}, err
	}
	base := s.UserBase + prepared.Add(1)*1000
	users := make([]int64, s.Grabbers)
	for i := range users {
		users[i] = base + senders + 1 + int64(i)
	}
	if engineName == EngineRaw {
		ids := make([]int64, s.Packets)
		for i := range ids {
			ids[i] = base + int64(i) // probe ids: keys of their own
		}
		if err := loadProbes(ctx, env, ids, s.Shares); err != nil {
			return Plan{}, err
		}
		return s.plan(ids, users), nil
	}
	group := base
	members := append([]int64{}, users...)
	for i := int64(1); i <= senders; i++ {
		members = append(members, base+i)
	}
	if err := env.Setup.SetGroupMembers(ctx, group, members); err != nil {
		return Plan{}, fmt.Errorf("group: %w", err)
	}
	perSender := int64((s.Packets + senders - 1) / senders)
	amount := int64(s.Shares) * shareFen
	for i := int64(1); i <= senders; i++ {
		ref := fmt.Sprintf("bench-%d-%d", base, i)
		if err := env.Setup.Deposit(ctx, base+i, perSender*amount, ref); err != nil {
			return Plan{}, fmt.Errorf("deposit: %w", err)
		}
	}
	ids := make([]int64, s.Packets)
	if s.paysThroughChannel() && engineName != EngineMySQLLock {
		return s.prepareChannel(ctx, env, ids, users, group, base, amount)
	}
	err := parallel(ctx, s.Packets, 16, func(ctx context.Context, i int) error {
		id, err := env.Setup.SendAndPay(ctx, base+1+int64(i%senders), group, s.Shares, amount)
		ids[i] = id
		return err
	})
	if err != nil {
		return Plan{}, fmt.Errorf("packets: %w", err)
	}
	p := s.plan(ids, users)
	p.Packets = ids
	return p, nil
}

// prepareChannel pays the run's packets through the simulated channel:
// each opens at its sender's return, and the plan's Settle waits for every
// notification and credits what was grabbed meanwhile.
func (s *GroupStorm) prepareChannel(ctx context.Context, env *Env, ids, users []int64, group, base, amount int64) (Plan, error) {
	if _, ok := env.Setup.(EngineSetup); !ok || s.payer == nil {
		return Plan{}, errors.New("group-storm: paying through a channel needs grabd in-process (no -url)")
	}
	if err := s.startChannel(ctx, env.Engine); err != nil {
		return Plan{}, fmt.Errorf("%s simulator: %w", s.Pay, err)
	}
	trades := make([]string, len(ids))
	err := parallel(ctx, s.Packets, 16, func(ctx context.Context, i int) error {
		var err error
		ids[i], trades[i], err = sendAndPayThrough(ctx, env.Engine, s.Pay, base+1+int64(i%senders), group, s.Shares, amount)
		return err
	})
	if err != nil {
		return Plan{}, fmt.Errorf("packets: %w", err)
	}
	p := s.plan(ids, users)
	p.Packets = ids
	p.Settle = func(ctx context.Context) (int, error) { return settlePayments(ctx, env.Engine, env.DB, trades, ids) }
	return p, nil
}

// loadProbes puts a list of n shares per probe id for the raw probe script.
func loadProbes(ctx context.Context, env *Env, ids []int64, n int) error {
	shares := make([]any, n)
	for i := range shares {
		shares[i] = lua.EncodeShare(lua.Share{Seq: i + 1, Amount: shareFen}, i == n-1)
	}
	return parallel(ctx, len(ids), 16, func(ctx context.Context, i int) error {
		return pushProbe(ctx, env, env.Keys.Probe(ids[i]), shares)
	})
}

// pushProbe puts shares (list entries) on a probe's list.
func pushProbe(ctx context.Context, env *Env, k lua.ProbeKeys, shares []any) error {
	pipe := env.Redis.Pipeline()
	pipe.RPush(ctx, k.Shares, shares...)
	pipe.Expire(ctx, k.Shares, time.Hour) // an interrupted run leaves nothing for long
	_, err := pipe.Exec(ctx)
	return err
}

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
