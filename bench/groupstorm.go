package bench

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/grab-engine/grab"

	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/lua"
)

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

// Configure implements Scenario: with a channel to pay through, the
// engine's provider for it is the run's simulated channel.
func (s *GroupStorm) Configure(d *grab.Deps, _ *engine.Config) {
	if s.paysThroughChannel() {
		s.payThrough(d)
	}
}

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

// stormTrial is one engine's group storm: the packets (probe ids for raw)
// each grabbed by every user, in order.
type stormTrial struct {
	s        *GroupStorm
	env      *Env
	engine   string
	targets  []int64
	users    []int64
	packets  []int64  // the packets in MySQL, for the drain; none for raw
	trades   []string // paid through a channel: the packets' trades, to settle
	external bool     // set up through an external grabd, whose Redis is not ours
}

// Plan implements Trial: every user grabs from each target in turn.
func (t *stormTrial) Plan() Plan {
	g := int64(len(t.users))
	return Plan{
		Ops:         int64(len(t.targets)) * g,
		Op:          func(i int64) Op { return Op{Target: t.targets[i/g], User: t.users[i%g]} },
		Concurrency: t.s.Concurrency,
	}
}

// Report implements Trial: the Redis bytes of an open packet, measured on
// the first run with packets in this process's Redis.
func (t *stormTrial) Report(ctx context.Context) map[string]any {
	if len(t.packets) == 0 || t.external {
		return nil
	}
	b, err := packetMemory(ctx, t.env.Redis, t.env.Keys, t.packets)
	if err != nil {
		return nil
	}
	return map[string]any{"redis_bytes_per_open_packet": b}
}

// Grabber implements Trial: the packet engines.
func (t *stormTrial) Grabber(api HTTPSetup) (Grabber, error) {
	switch t.engine {
	case EngineRaw:
		return Raw{Redis: t.env.Redis, Keys: t.env.Keys}, nil
	case EngineEngine:
		return Engine{E: t.env.Engine.Packets}, nil
	case EngineMySQLLock:
		return MySQLLock{DB: t.env.DB.SQL()}, nil
	case EngineHTTP:
		return api.HTTP, nil
	}
	return nil, fmt.Errorf("group-storm: no engine %q", t.engine)
}

// Drain implements Trial: MySQL shows at least `accepted` owned shares
// among the packets.
func (t *stormTrial) Drain(ctx context.Context, accepted int64, timeout time.Duration) error {
	return waitDrained(ctx, t.env.DB, t.packets, accepted, timeout)
}

// Settle implements Trial: packets paid through a channel wait for every
// notification and credit what was grabbed meanwhile.
func (t *stormTrial) Settle(ctx context.Context) (int, error) {
	if t.trades == nil {
		return 0, ErrNothingToSettle
	}
	return settlePayments(ctx, t.env.Engine.Packets, t.env.DB, t.trades, t.packets)
}

// Audit implements Trial: no more grabs answered OK than there are shares.
// The packets' records are the database's, which Run audits.
func (t *stormTrial) Audit(_ context.Context, load Load) ([]string, bool, error) {
	a := &auditor{counts: map[string]int{}}
	if ok, shares := load.Codes[CodeOK], int64(len(t.targets))*int64(t.s.Shares); ok > shares {
		a.add("oversold", "%d grabs answered OK for %d shares", ok, shares)
	}
	return a.violations, false, nil
}

// Prepare implements Scenario: the group and its members, the senders'
// deposits and the paid packets; for raw, a probe list of N shares for
// each of P probe ids.
func (s *GroupStorm) Prepare(ctx context.Context, env *Env, engineName string) (Trial, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	base := s.UserBase + prepared.Add(1)*1000
	t := &stormTrial{s: s, env: env, engine: engineName, users: make([]int64, s.Grabbers)}
	_, t.external = env.Setup.(HTTPSetup)
	for i := range t.users {
		t.users[i] = base + senders + 1 + int64(i)
	}
	if engineName == EngineRaw {
		t.targets = make([]int64, s.Packets)
		for i := range t.targets {
			t.targets[i] = base + int64(i) // probe ids: keys of their own
		}
		if err := loadProbes(ctx, env, t.targets, s.Shares); err != nil {
			return nil, err
		}
		return t, nil
	}
	if err := s.preparePackets(ctx, t, base); err != nil {
		return nil, err
	}
	return t, nil
}

// preparePackets makes the run's group and its paid packets.
func (s *GroupStorm) preparePackets(ctx context.Context, t *stormTrial, base int64) error {
	env := t.env
	group := base
	members := append([]int64{}, t.users...)
	for i := int64(1); i <= senders; i++ {
		members = append(members, base+i)
	}
	if err := env.Setup.SetGroupMembers(ctx, group, members); err != nil {
		return fmt.Errorf("group: %w", err)
	}
	perSender := int64((s.Packets + senders - 1) / senders)
	amount := int64(s.Shares) * shareFen
	for i := int64(1); i <= senders; i++ {
		ref := fmt.Sprintf("bench-%d-%d", base, i)
		if err := env.Setup.Deposit(ctx, base+i, perSender*amount, ref); err != nil {
			return fmt.Errorf("deposit: %w", err)
		}
	}
	t.targets = make([]int64, s.Packets)
	t.packets = t.targets
	if s.paysThroughChannel() && t.engine != EngineMySQLLock {
		return s.prepareChannel(ctx, t, group, base, amount)
	}
	err := parallel(ctx, s.Packets, 16, func(ctx context.Context, i int) error {
		id, err := env.Setup.SendAndPay(ctx, base+1+int64(i%senders), group, s.Shares, amount)
		t.targets[i] = id
		return err
	})
	if err != nil {
		return fmt.Errorf("packets: %w", err)
	}
	return nil
}

// prepareChannel pays the run's packets through the simulated channel:
// each opens at its sender's return, and the trial's Settle waits for every
// notification and credits what was grabbed meanwhile.
func (s *GroupStorm) prepareChannel(ctx context.Context, t *stormTrial, group, base, amount int64) error {
	env := t.env
	if _, ok := env.Setup.(EngineSetup); !ok || s.payer == nil {
		return errors.New("group-storm: paying through a channel needs grabd in-process (no -url)")
	}
	if err := s.startChannel(ctx, env.Engine); err != nil {
		return fmt.Errorf("%s simulator: %w", s.Pay, err)
	}
	t.trades = make([]string, len(t.targets))
	err := parallel(ctx, s.Packets, 16, func(ctx context.Context, i int) error {
		var err error
		t.targets[i], t.trades[i], err = sendAndPayThrough(ctx, env.Engine.Packets, s.Pay, base+1+int64(i%senders), group, s.Shares, amount)
		return err
	})
	if err != nil {
		return fmt.Errorf("packets: %w", err)
	}
	return nil
}

// loadProbes puts a list of n shares per probe id for the raw probe script.
func loadProbes(ctx context.Context, env *Env, ids []int64, n int) error {
	shares := make([]lua.Share, n)
	for i := range shares {
		shares[i] = lua.Share{Seq: i + 1, Amount: shareFen}
	}
	return parallel(ctx, len(ids), 16, func(ctx context.Context, i int) error {
		return pushProbe(ctx, env, env.Keys.Probe(ids[i]), shares, true)
	})
}

// pushProbe puts shares on a probe's list (the last one final when
// lastFinal), for an hour.
func pushProbe(ctx context.Context, env *Env, k lua.ProbeKeys, shares []lua.Share, lastFinal bool) error {
	pipe := env.Redis.Pipeline()
	lua.OpenProbe(ctx, pipe, k, shares, lastFinal, time.Hour)
	_, err := pipe.Exec(ctx)
	return err
}
