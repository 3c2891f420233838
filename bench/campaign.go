package bench

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/grab-engine/grab"

	"github.com/grab-engine/grab/engine/campaign"
	"github.com/grab-engine/grab/engine/money"

	"github.com/jmoiron/sqlx"

	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/engine/errs"
	"github.com/grab-engine/grab/engine/transfer"
	"github.com/grab-engine/grab/engine/transfersim"
	"github.com/grab-engine/grab/lua"
	"github.com/grab-engine/grab/store"
)

// Campaign is one campaign of A awards pre-split from a budget, grabbed
// once by each of U users from C concurrent clients: the platform's red
// packet rain. Every award won is paid out through a wallet transfer
// service that fails, loses replies and handles requests twice at the rates
// of Faults. With U ≥ A exactly A awards are won, adding up to the budget,
// and the rest of the users are answered SOLD_OUT.
//
// Its engines: raw is the probe script on a list of the awards (a per-user
// check, a pop, a record, an event; no payout); engine is
// campaign.Service.GrabCampaign; http is POST /v1/campaigns/{id}/grab; mysql-lock is
// the payout scheme in MySQL alone (campaignLock); engine-sync, its own
// engine, is GrabCampaign in the sync payout mode, the grab paying before it
// answers (a second engine on the same Redis, store and writer, as a second
// grabd configured so would be). In the async payout mode (the default)
// the engine and http runs pay during the load as grabd does: the payout
// pool (campaign.Service.RunPayoutPool) runs from before the load until
// the settle. After the load, the settle lets the pool finish, then drives
// the payouts left transferring (the engine's payout sweeper, or the naive
// scheme's re-drive loop) before the audit.
//
// Each engine run has a campaign and a transfer simulator of its own, served
// on loopback through the production client until the ctx given to Run ends.
// A Campaign keeps each engine's last run for Audit and Settle; it is not
// for concurrent use.
type Campaign struct {
	Awards      int   // A, at most campaign.MaxAwards
	Users       int   // U, one grab each
	Budget      int64 // fen; each award is 0.01 to twice the mean
	Concurrency int   // C
	// Faults of every run's transfer simulator; Seed drives their draws.
	Faults transfersim.Faults
	Seed   uint64
	// TransferRate bounds the engine's transfer calls per second, first
	// attempts and retries alike (engine.Config.TransferRate; 0: none), and
	// PayoutWorkers is how many awards its payout pool and each sweep drive
	// at once (engine.Config.PayoutWorkers; 0: the engine's default).
	TransferRate  float64
	PayoutWorkers int

	payouts *payoutService          // made on first use, so a Campaign copies as a value
	runs    map[string]*campaignRun // the last run per engine
}

// DefaultCampaign finishes every engine within seconds on a 2-core machine,
// with the transfer service failing half its calls.
func DefaultCampaign() *Campaign {
	def := engine.DefaultConfig()
	return &Campaign{Awards: 2000, Users: 10000, Budget: 100_000, Concurrency: 64, Seed: 1,
		Faults:       transfersim.Faults{ErrorRate: 0.5, LoseReplyRate: 0.1, DuplicateRate: 0.05},
		TransferRate: def.TransferRate, PayoutWorkers: def.PayoutWorkers}
}

// Engines implements EngineLister: the four engines, and the sync payout
// mode's as a baseline after the engine's.
func (*Campaign) Engines() []string {
	return []string{EngineRaw, EngineEngine, EngineSync, EngineHTTP, EngineMySQLLock}
}

// Name implements Scenario.
func (*Campaign) Name() string { return "campaign" }

// Params implements Scenario.
func (s *Campaign) Params() map[string]any {
	return map[string]any{"awards": s.Awards, "users": s.Users, "budget": money.Format(s.Budget),
		"concurrency": s.Concurrency, "transfer_errors": s.Faults.ErrorRate, "transfer_lost": s.Faults.LoseReplyRate,
		"transfer_dups": s.Faults.DuplicateRate, "transfer_latency": s.Faults.Latency.String(), "seed": s.Seed,
		"transfer_rate": s.TransferRate, "payout_workers": s.PayoutWorkers}
}

// Validate reports settings the campaign rules would refuse, and faults
// under which no payout could ever settle.
func (s *Campaign) Validate() error {
	rate := func(r float64) bool { return r >= 0 && r <= 1 }
	switch {
	case s.Awards <= 0 || s.Users <= 0 || s.Concurrency <= 0:
		return errors.New("campaign: awards, users and concurrency must be positive")
	case s.Awards > campaign.MaxAwards:
		return fmt.Errorf("campaign: at most %d awards", campaign.MaxAwards)
	case s.Budget < int64(s.Awards) || s.Budget > campaign.MaxBudget:
		return fmt.Errorf("campaign: the budget must be 0.01 an award at least and %s at most", money.Format(campaign.MaxBudget))
	case !rate(s.Faults.ErrorRate) || !rate(s.Faults.LoseReplyRate) || !rate(s.Faults.DuplicateRate):
		return errors.New("campaign: transfer fault rates must be 0..1")
	case s.Faults.ErrorRate == 1 || s.Faults.LoseReplyRate == 1:
		return errors.New("campaign: with every transfer call failing or unanswered no payout settles")
	case s.Faults.Latency < 0 || s.Faults.Latency >= transferTimeout:
		return fmt.Errorf("campaign: transfer latency must be 0 to under %v (a call's timeout)", transferTimeout)
	case !(s.TransferRate >= 0) || math.IsInf(s.TransferRate, 1):
		return errors.New("campaign: the transfer rate must be 0 (no limit) or a positive number of calls a second")
	case s.PayoutWorkers < 0:
		return errors.New("campaign: payout workers must be 0 (the engine's default) or more")
	}
	return nil
}

// awardMax is twice the mean award, so the split has room to vary.
func (s *Campaign) awardMax() int64 { return 2 * ((s.Budget + int64(s.Awards) - 1) / int64(s.Awards)) }

// transferTimeout bounds one call of the transfer service: the engine's
// default, for the naive scheme too.
var transferTimeout = engine.DefaultConfig().TransferTimeout

// Configure implements Scenario: the engine pays through the
// simulator of the run in progress, its calls held to TransferRate, and its
// sweeper takes an award again as soon as it is asked to. Attempts are all
// but unbounded: this measures settling under faults, not parking (engine
// tests cover that; with the default 10 attempts and half the calls
// failing, a few awards in 2,000 would park for a person).
func (s *Campaign) Configure(d *grab.Deps, c *engine.Config) {
	d.Campaigns.Transfer = s.service()
	c.PayoutRetryAfter = time.Millisecond
	c.PayoutMaxAttempts = 1000
	c.TransferRate, c.PayoutWorkers = s.TransferRate, s.PayoutWorkers
}

func (s *Campaign) service() *payoutService {
	if s.payouts == nil {
		s.payouts = &payoutService{}
	}
	return s.payouts
}

// payoutService is the engines' transfer service: the run in progress,
// which pays through the client of its simulator. The harness makes one
// engine for every run, and each run pays through a simulator of its own,
// so that simulator's counters (and the run's count of calls) are the
// run's alone.
type payoutService struct {
	cur atomic.Pointer[campaignRun]
}

var errNoService = errors.New("bench: no campaign run is paying out")

func (p *payoutService) use(r *campaignRun) { p.cur.Store(r) }

// Transfer implements transfer.Service.
func (p *payoutService) Transfer(ctx context.Context, t transfer.Transfer) (transfer.Result, error) {
	if r := p.cur.Load(); r != nil {
		return r.transfer(ctx, t)
	}
	return transfer.Result{}, errNoService
}

// QueryTransfer implements transfer.Service.
func (p *payoutService) QueryTransfer(ctx context.Context, outTradeNo string) (transfer.Result, error) {
	if r := p.cur.Load(); r != nil {
		return r.xfer.QueryTransfer(ctx, outTradeNo)
	}
	return transfer.Result{}, errNoService
}

// campaignRun is one engine's campaign: where its awards are, the service
// that pays them, and what the grabs were answered.
type campaignRun struct {
	s      *Campaign
	env    *Env
	engine string
	id     int64         // the campaign; for raw, the probe's id
	probe  lua.ProbeKeys // raw
	sim    *transfersim.Sim
	xfer   *transfer.Client // the production client of sim
	calls  atomic.Int64     // transfer calls made through xfer (transfer)
	// svc is the campaign service the run grabs and settles through: the
	// harness's engine, or for engine-sync one in the sync payout mode.
	svc *campaign.Service
	// pool: the run's payouts are made by the payout pool during the load.
	// stop ends what runs beside the load until the settle (the pool; the
	// sync engine's lag monitor); nil once stopped, or for none.
	pool bool
	stop func()
	load Load // set by Audit
}

// Prepare implements Scenario: the awards for the engine (a campaign created
// through the engine, or the probe's list) and, but for raw, a transfer
// simulator to pay them.
func (s *Campaign) Prepare(ctx context.Context, env *Env, engineName string) (Trial, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	if _, external := env.Setup.(HTTPSetup); external {
		return nil, errors.New("campaign: cannot pay out through an external grabd (-url); it runs grabd in-process")
	}
	r := &campaignRun{s: s, env: env, engine: engineName, svc: env.Engine.Campaigns}
	if engineName == EngineRaw {
		if err := r.loadProbe(ctx); err != nil {
			return nil, fmt.Errorf("awards: %w", err)
		}
	} else {
		if err := r.startService(ctx); err != nil {
			return nil, fmt.Errorf("transfer simulator: %w", err)
		}
		s.service().use(r)
		var syncCore *engine.Engine
		if engineName == EngineSync {
			syncCore, r.svc = s.syncEngine(env)
		}
		// Through the engine for mysql-lock too: the naive scheme works on
		// the same rows and leaves their Redis state unused.
		now := time.Now()
		c, _, err := r.svc.CreateCampaign(ctx, campaign.NewCampaign{Name: "grabbench", Budget: s.Budget,
			AwardCount: s.Awards, AwardMin: 1, AwardMax: s.awardMax(), PerUserLimit: 1,
			StartsAt: now.Add(-time.Minute), EndsAt: now.Add(time.Hour)})
		if err != nil {
			return nil, fmt.Errorf("campaign: %w", err)
		}
		r.id = c.ID
		switch {
		case syncCore != nil:
			// Its grabs see the writer's lag, as a grabd that leaves the
			// writer to another does.
			r.stop = runUntilStopped(ctx, syncCore.RunMonitor)
		case (engineName == EngineEngine || engineName == EngineHTTP) && env.Engine.Engine.Config().PayoutMode != engine.PayoutSync:
			r.pool, r.stop = true, runUntilStopped(ctx, r.svc.RunPayoutPool)
		}
	}
	if s.runs == nil {
		s.runs = map[string]*campaignRun{}
	}
	s.runs[engineName] = r
	return r, nil
}

// syncEngine is an engine of its own on env's Redis and store in the sync
// payout mode, the rest of its configuration env's engine's, with the
// campaign service on it: a grabd with GRAB_PAYOUT_MODE=sync beside the
// others, its grabs made durable by their writer. It pays through the run
// in progress, as the harness's engine does.
func (s *Campaign) syncEngine(env *Env) (*engine.Engine, *campaign.Service) {
	e := env.Engine.Engine
	cfg := e.Config()
	cfg.PayoutMode = engine.PayoutSync
	sync := engine.New(engine.Deps{Redis: e.Redis(), DB: e.DB(), Clock: e.Clock(), Rand: e.Rand(), Log: e.Log()}, cfg)
	return sync, campaign.New(sync, campaign.Deps{Transfer: s.service()})
}

// runUntilStopped runs fn in a goroutine until the returned stop, which
// waits for it to return. fn's error is dropped: the loops it runs (the
// payout pool, the lag monitor) return none.
func runUntilStopped(ctx context.Context, fn func(context.Context) error) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(ctx)
	}()
	return func() { cancel(); <-done }
}

// Plan implements Trial: user i+1 grabs once.
func (r *campaignRun) Plan() Plan {
	return Plan{Ops: int64(r.s.Users), Op: func(i int64) Op { return Op{Target: r.id, User: i + 1} },
		Concurrency: r.s.Concurrency}
}

// Report implements Trial: the params say it all.
func (*campaignRun) Report(context.Context) map[string]any { return nil }

// CampaignID is the campaign of the last run on engineName.
func (s *Campaign) CampaignID(engineName string) (int64, bool) {
	r := s.runs[engineName]
	if r == nil || r.engine == EngineRaw {
		return 0, false
	}
	return r.id, true
}

// Audit checks the last run on engineName again, as the harness did after
// it, against the answers it had then (for tests that plant violations).
func (s *Campaign) Audit(ctx context.Context, engineName string) (AuditResult, error) {
	r := s.runs[engineName]
	if r == nil {
		return AuditResult{}, fmt.Errorf("campaign: no run on %s", engineName)
	}
	vs, err := r.audit(ctx)
	if err != nil {
		return AuditResult{}, err
	}
	return AuditResult{OK: len(vs) == 0, Violations: append([]string{}, vs...)}, nil
}

// Settle drives the payouts of the last run on engineName again, as the
// harness did after it, through that run's simulator (for tests that
// plant violations). The ctx given to Run must not have ended.
func (s *Campaign) Settle(ctx context.Context, engineName string) (sweeps int, err error) {
	r := s.runs[engineName]
	if r == nil || r.engine == EngineRaw {
		return 0, fmt.Errorf("campaign: no run on %s that pays out", engineName)
	}
	return r.Settle(ctx)
}

// startService serves a transfer simulator on a loopback listener until ctx
// ends, with a client of it, signed with a secret of this run's own.
func (r *campaignRun) startService(ctx context.Context) error {
	secret := make([]byte, 16)
	rand.Read(secret)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	r.sim = transfersim.New(secret, r.s.Faults, r.s.Seed)
	go r.sim.Serve(ctx, l)
	conns := 2 * r.s.Concurrency
	hc := &http.Client{Transport: &http.Transport{MaxIdleConns: conns, MaxIdleConnsPerHost: conns}}
	r.xfer = transfer.NewClient("http://"+l.Addr().String(), secret, 0, hc)
	return nil
}

// Grabber implements Trial: the campaign's engines.
func (r *campaignRun) Grabber(api HTTPSetup) (Grabber, error) {
	switch r.engine {
	case EngineRaw:
		// The probe script on the awards' list: a per-user check, an LPOP, a
		// record and an XADD on one hash tag, with no window and no payout.
		return Raw{Redis: r.env.Redis, Keys: r.env.Keys}, nil
	case EngineEngine, EngineSync:
		return campaignEngine{r}, nil
	case EngineHTTP:
		return campaignHTTP{api.HTTP}, nil
	case EngineMySQLLock:
		return campaignLock{r.env.DB.SQL(), r}, nil
	}
	return nil, fmt.Errorf("campaign: no engine %q", r.engine)
}

// --- raw: the probe script on the awards -------------------------------

// loadProbe splits the budget as a campaign would and puts the awards on a
// probe list of their own ("seq:amount", as campaign_grab.lua's list).
func (r *campaignRun) loadProbe(ctx context.Context) error {
	amounts, err := campaign.Split(engine.GlobalRand{}, r.s.Budget, r.s.Awards, 1, r.s.awardMax())
	if err != nil {
		return err
	}
	awards := make([]lua.Share, len(amounts))
	for i, a := range amounts {
		awards[i] = lua.Share{Seq: i + 1, Amount: a}
	}
	r.id = prepared.Add(1)
	r.probe = r.env.Keys.Probe(r.id)
	return pushProbe(ctx, r.env, r.probe, awards, false)
}

// --- engine, engine-sync: campaign.Service.GrabCampaign in-process ------------------------------

type campaignEngine struct{ r *campaignRun }

func (g campaignEngine) Name() string { return g.r.engine }

func (g campaignEngine) Grab(ctx context.Context, op Op) (string, error) {
	_, err := g.r.svc.GrabCampaign(ctx, op.Target, op.User)
	return engineAnswer(err)
}

// --- http: POST /v1/campaigns/{id}/grab ------------------------------------

type campaignHTTP struct{ api HTTP }

func (campaignHTTP) Name() string { return EngineHTTP }

func (g campaignHTTP) Grab(ctx context.Context, op Op) (string, error) {
	return g.api.grab(ctx, g.grabPath(op), op.User)
}

// grabPath implements wrkGrabber: POST /v1/campaigns/{id}/grab.
func (campaignHTTP) grabPath(op Op) string {
	return "/v1/campaigns/" + strconv.FormatInt(op.Target, 10) + "/grab"
}

func (g campaignHTTP) baseURL() string { return g.api.URL }

// --- mysql-lock: the payout scheme without Redis --------------------------

// campaignLock is the payout scheme done naively in MySQL, on the engine's
// tables: one transaction per grab locks the campaign's row (SELECT … FOR
// UPDATE), checks the user's awards and the window, takes the next award's
// share, inserts the award as transferring (status 7), adds it to the
// used and accumulated amounts and commits; then, outside the transaction,
// it calls the transfer service and moves the award to transferred (4).
// Every grab of the campaign queues on that row lock.
type campaignLock struct {
	db *sqlx.DB
	r  *campaignRun
}

func (campaignLock) Name() string { return EngineMySQLLock }

func (g campaignLock) Grab(ctx context.Context, op Op) (string, error) {
	var a store.Award
	code, err := retryLockRace(func() (string, error) { return g.take(ctx, op, &a) })
	if code != CodeOK || err != nil || a.Status != store.AwardTransferring {
		return code, err
	}
	return g.pay(ctx, a, false)
}

// take is the transaction; a is the award it granted, if any.
func (g campaignLock) take(ctx context.Context, op Op, a *store.Award) (string, error) {
	*a = store.Award{}
	tx, err := g.db.BeginTxx(ctx, nil)
	if err != nil {
		return errs.CodeInternal, err
	}
	defer tx.Rollback()
	var c struct {
		Budget   store.Fen `db:"budget"`
		Used     store.Fen `db:"used_amount"`
		Count    int       `db:"award_count"`
		Awarded  int       `db:"awarded_count"`
		StartsAt time.Time `db:"starts_at"`
		EndsAt   time.Time `db:"ends_at"`
		Limit    int       `db:"per_user_limit"`
	}
	err = tx.GetContext(ctx, &c, `SELECT c.budget, c.used_amount, c.award_count, c.awarded_count, c.starts_at, c.ends_at,
		r.per_user_limit FROM campaign c JOIN campaign_rule r ON r.campaign_id = c.id WHERE c.id = ? FOR UPDATE`, op.Target)
	if errors.Is(err, sql.ErrNoRows) {
		return errs.CodeNotFound, nil
	}
	if err != nil {
		return errs.CodeInternal, err
	}
	var held []string // the user's awards' payout statuses, latest first
	if err := tx.SelectContext(ctx, &held, "SELECT status FROM campaign_award WHERE campaign_id = ? AND user_id = ? ORDER BY seq DESC",
		op.Target, op.User); err != nil {
		return errs.CodeInternal, err
	}
	now := time.Now().UTC()
	switch {
	case len(held) >= c.Limit && held[0] == store.AwardTransferred:
		return CodeOK, nil // at the limit: the latest award again
	case len(held) >= c.Limit:
		return errs.CodePayoutInProgress, nil
	case now.Before(c.StartsAt):
		return errs.CodeNotOpen, nil
	case !now.Before(c.EndsAt):
		return errs.CodeExpired, nil
	case c.Awarded >= c.Count:
		return errs.CodeSoldOut, nil
	}
	seq := c.Awarded + 1
	var amount store.Fen
	if err := tx.GetContext(ctx, &amount, "SELECT amount FROM campaign_share WHERE campaign_id = ? AND seq = ?", op.Target, seq); err != nil {
		return errs.CodeInternal, err
	}
	if c.Used+amount > c.Budget {
		return errs.CodeSoldOut, nil
	}
	no := store.OutTradeNo(op.Target, seq)
	if _, err := tx.ExecContext(ctx, `INSERT INTO campaign_award (campaign_id, seq, user_id, amount, status, out_trade_no,
		attempts, awarded_at, updated_at, transferring_at) VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?)`,
		op.Target, seq, op.User, money.Format(int64(amount)), store.AwardTransferring, no, now, now, now); err != nil {
		return errs.CodeInternal, err
	}
	if _, err := tx.ExecContext(ctx, "UPDATE campaign SET used_amount = used_amount + ?, awarded_count = awarded_count + 1 WHERE id = ?",
		money.Format(int64(amount)), op.Target); err != nil {
		return errs.CodeInternal, err
	}
	if _, err := tx.ExecContext(ctx, "UPDATE campaign_rule SET acc_amount = acc_amount + ? WHERE campaign_id = ?",
		money.Format(int64(amount)), op.Target); err != nil {
		return errs.CodeInternal, err
	}
	if err := tx.Commit(); err != nil {
		return errs.CodeInternal, err
	}
	*a = store.Award{CampaignID: op.Target, Seq: seq, UserID: op.User, Amount: amount, Status: store.AwardTransferring, OutTradeNo: no}
	return CodeOK, nil
}

// pay calls the service for an award that is transferring, outside any
// transaction; again (the re-drive) asks about its number first, as a
// failed or unanswered call may have been applied. A success moves the
// award to transferred, a conflict parks it, anything else leaves it
// transferring for the next pass: PAYOUT_IN_PROGRESS.
func (g campaignLock) pay(ctx context.Context, a store.Award, again bool) (string, error) {
	// The award is 7 now: finish the call even if the caller goes away.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), transferTimeout)
	defer cancel()
	var res transfer.Result
	var err error
	if again {
		res, err = g.r.xfer.QueryTransfer(ctx, a.OutTradeNo)
	}
	if !again || err != nil || res.Outcome != transfer.Succeeded {
		res, err = g.r.transfer(ctx, transfer.Transfer{OutTradeNo: a.OutTradeNo, UserID: a.UserID, Amount: int64(a.Amount),
			Memo: fmt.Sprintf("campaign %d award %d", a.CampaignID, a.Seq)})
	}
	now := time.Now().UTC()
	switch {
	case errors.Is(err, transfer.ErrConflict) || (err == nil && res.Amount != int64(a.Amount)):
		_, err := g.db.ExecContext(ctx, `UPDATE campaign_award SET status = ?, updated_at = ?
			WHERE campaign_id = ? AND seq = ? AND status = ?`, store.AwardNeedsAttention, now, a.CampaignID, a.Seq, store.AwardTransferring)
		return errs.CodePayoutInProgress, err
	case err != nil || res.Outcome != transfer.Succeeded:
		return errs.CodePayoutInProgress, nil
	}
	if _, err := g.db.ExecContext(ctx, `UPDATE campaign_award SET status = ?, transfer_id = ?, transferred_at = ?, updated_at = ?
		WHERE campaign_id = ? AND seq = ? AND status = ?`, store.AwardTransferred, res.TransferID, now, now,
		a.CampaignID, a.Seq, store.AwardTransferring); err != nil {
		return errs.CodePayoutInProgress, err
	}
	return CodeOK, nil
}

// --- drain, settle and audit --------------------------------------------------

// Drain implements Trial: MySQL has a row for every award Redis granted;
// most were written by the grab itself, which pays at once.
func (r *campaignRun) Drain(ctx context.Context, accepted int64, timeout time.Duration) error {
	var c campaign.Campaign
	err := poll(ctx, timeout, func() (bool, error) {
		var err error
		c, err = r.env.Engine.Campaigns.GetCampaign(ctx, r.id)
		return c.Awarded == c.AwardCount-c.Remaining, err
	})
	if errors.Is(err, errTimedOut) {
		return fmt.Errorf("MySQL holds %d of the %d awards Redis granted after %v (%d grabs answered OK)",
			c.Awarded, c.AwardCount-c.Remaining, timeout, accepted)
	}
	return err
}

// Settle implements Trial: it lets the payout pool of the load finish its
// work, if it ran, and stops it; then it drives every award left received
// or transferring until none is: campaign.Service.SweepPayouts for the
// engine (its retry threshold is a millisecond here), the naive scheme's
// re-drive loop for mysql-lock. It counts the sweeps that found work. The
// raw probe pays nothing out: ErrNothingToSettle.
func (r *campaignRun) Settle(ctx context.Context) (int, error) {
	if r.engine == EngineRaw {
		return 0, ErrNothingToSettle
	}
	if err := r.finishPool(ctx); err != nil {
		return 0, err
	}
	sweeps := 0
	for {
		// Counted even when time is up, for the message.
		due, err := r.unpaid(context.WithoutCancel(ctx))
		switch {
		case err != nil:
			return sweeps, err
		case len(due) == 0:
			return sweeps, nil
		case ctx.Err() != nil:
			return sweeps, fmt.Errorf("%d awards not paid out after %d sweeps: %w", len(due), sweeps, ctx.Err())
		}
		if r.engine == EngineMySQLLock {
			g := campaignLock{r.env.DB.SQL(), r}
			err = parallel(ctx, len(due), engine.DefaultConfig().PayoutWorkers, func(ctx context.Context, i int) error {
				_, err := g.pay(ctx, due[i], true)
				return err
			})
			sweeps++
		} else {
			r.s.service().use(r)
			var sw campaign.PayoutSweep
			if sw, err = r.svc.SweepPayouts(ctx); sw.Claimed > 0 {
				sweeps++
			} else {
				time.Sleep(time.Millisecond) // what is left is not yet overdue
			}
		}
		if err != nil && ctx.Err() == nil {
			return sweeps, err
		}
	}
}

// finishPool stops what ran beside the load, once the payout pool, if it
// ran, has finished: no award of the run is received, and every award the
// pool claimed (each claim adds an attempt) has had its transfer call.
// Stopped, the pool returns once those calls are recorded; an award whose
// call failed stays transferring, for the sweeper. The drain is over, so
// no award comes after.
func (r *campaignRun) finishPool(ctx context.Context) error {
	if r.stop == nil {
		return nil
	}
	defer func() { r.stop(); r.stop = nil }()
	if !r.pool {
		return nil
	}
	for {
		var p struct {
			Received int   `db:"received"`
			Attempts int64 `db:"attempts"`
		}
		if err := r.env.DB.SQL().GetContext(ctx, &p, `SELECT COUNT(CASE WHEN status = ? THEN 1 END) AS received,
			COALESCE(SUM(attempts), 0) AS attempts FROM campaign_award WHERE campaign_id = ?`, store.AwardReceived, r.id); err != nil {
			return err
		}
		// The calls are read after the claims, so equal means every claim has its call.
		if p.Received == 0 && r.calls.Load() == p.Attempts {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the payout pool had not finished (%d awards received, %d claims, %d calls): %w",
				p.Received, p.Attempts, r.calls.Load(), ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// transfer is a transfer call of the run's engine, counted.
func (r *campaignRun) transfer(ctx context.Context, t transfer.Transfer) (transfer.Result, error) {
	r.calls.Add(1)
	return r.xfer.Transfer(ctx, t)
}

// Payouts implements payer: what the run's simulator applied, between the
// first award (in MySQL) and the last transfer it applied, with the calls
// the run's engine made and the limit they were held to. The raw probe
// pays nothing out.
func (r *campaignRun) Payouts(ctx context.Context) (Payouts, bool, error) {
	if r.engine == EngineRaw {
		return Payouts{}, false, nil
	}
	var first sql.NullTime
	if err := r.env.DB.SQL().GetContext(ctx, &first, "SELECT MIN(awarded_at) FROM campaign_award WHERE campaign_id = ?", r.id); err != nil {
		return Payouts{}, false, err
	}
	p := Payouts{Calls: r.calls.Load()}
	p.Applied, _ = r.sim.TotalApplied()
	if last := r.sim.LastApplied(); first.Valid && !last.IsZero() {
		p.Window = last.Sub(first.Time)
	}
	if r.engine != EngineMySQLLock {
		limit := r.env.Engine.Engine.Config().TransferRate // engine-sync's too
		p.Limit = &limit
	}
	return p, true, nil
}

// unpaid lists the run's awards still received or transferring.
func (r *campaignRun) unpaid(ctx context.Context) ([]store.Award, error) {
	var due []store.Award
	err := r.env.DB.SQL().SelectContext(ctx, &due, `SELECT campaign_id, seq, user_id, amount, status, out_trade_no
		FROM campaign_award WHERE campaign_id = ? AND status IN (?, ?) ORDER BY seq`, r.id, store.AwardReceived, store.AwardTransferring)
	return due, err
}

// Audit implements Trial: it keeps the run's answers for Campaign.Audit
// and checks the run's awards against them.
func (r *campaignRun) Audit(ctx context.Context, load Load) ([]string, bool, error) {
	r.load = load
	vs, err := r.audit(ctx)
	return vs, true, err
}

// audit checks the run's awards against its answers and its budget:
//
//   - no more awards won (OK or PAYOUT_IN_PROGRESS) than there are, and
//     when every grab was answered won or SOLD_OUT, exactly min(U, A);
//   - the awards granted (raw: the probe's record; the others: MySQL) are
//     the won answers, no award went to two users, no user holds more than
//     the per-user limit (1), and Σ awards ≤ budget — = budget when U ≥ A;
//   - raw: the list holds the awards not granted;
//   - the others: each award is its pre-split share, MySQL's used and
//     accumulated amounts are Σ awards, every award is transferred, and
//     the run's simulator applied each award's out-trade-no exactly once, to
//     its user with its amount, and nothing else (its totals are the
//     awards' count and Σ).
func (r *campaignRun) audit(ctx context.Context) ([]string, error) {
	a := &auditor{counts: map[string]int{}}
	s := r.s
	want := int64(min(s.Users, s.Awards))
	won, soldOut := r.load.Codes[CodeOK]+r.load.Codes[errs.CodePayoutInProgress], r.load.Codes[errs.CodeSoldOut]
	exact := r.load.Ops == int64(s.Users) && won+soldOut == r.load.Ops
	switch {
	case won > int64(s.Awards):
		a.add("oversold", "%d grabs won an award; the campaign has %d", won, s.Awards)
	case exact && won != want:
		a.add("wrong number of awards won", "%d grabs won; want min(users %d, awards %d) = %d", won, s.Users, s.Awards, want)
	}
	var awards []store.Award
	var err error
	if r.engine == EngineRaw {
		awards, err = r.probeAwards(ctx, a)
	} else {
		awards, err = r.env.DB.CampaignAwards(ctx, r.id)
	}
	if err != nil {
		return nil, err
	}
	n := int64(len(awards))
	switch {
	case n < won:
		a.add("won but not granted", "%d grabs won; %d awards granted", won, n)
	case exact && n != won:
		a.add("granted without a won answer", "%d awards granted; %d grabs won", n, won)
	}
	var sum int64
	perUser, perSeq := map[int64]int{}, map[int]int{}
	for _, aw := range awards {
		sum += int64(aw.Amount)
		perUser[aw.UserID]++
		perSeq[aw.Seq]++
	}
	for u, k := range perUser {
		if k > 1 {
			a.add("over the per-user limit", "user %d holds %d awards; the limit is 1", u, k)
		}
	}
	for seq, k := range perSeq {
		if k > 1 {
			a.add("award granted twice", "award %d granted %d times", seq, k)
		}
	}
	switch {
	case sum > s.Budget:
		a.add("overspent", "Σ awards %s > budget %s", money.Format(sum), money.Format(s.Budget))
	case exact && want == int64(s.Awards) && sum != s.Budget:
		a.add("budget not spent exactly", "Σ awards %s; every award was won, the budget is %s", money.Format(sum),
			money.Format(s.Budget))
	}
	if r.engine != EngineRaw {
		if err := r.auditPayouts(ctx, a, awards, sum); err != nil {
			return nil, err
		}
	}
	return a.violations, nil
}

// probeAwards reads the raw probe's record as awards, and checks that its
// list holds the rest.
func (r *campaignRun) probeAwards(ctx context.Context, a *auditor) ([]store.Award, error) {
	st, err := lua.ReadProbe(ctx, r.env.Redis, r.probe)
	if err != nil {
		return nil, err
	}
	if st.Left+len(st.Held) != r.s.Awards {
		a.add("awards lost", "%d granted and %d left of %d", len(st.Held), st.Left, r.s.Awards)
	}
	awards := make([]store.Award, 0, len(st.Held))
	for user, s := range st.Held {
		awards = append(awards, store.Award{Seq: s.Seq, UserID: user, Amount: store.Fen(s.Amount)})
	}
	return awards, nil
}

// auditPayouts checks the awards in MySQL against the campaign's split,
// its counters and what the run's simulator applied.
func (r *campaignRun) auditPayouts(ctx context.Context, a *auditor, awards []store.Award, sum int64) error {
	c, err := r.env.DB.Campaign(ctx, r.id)
	if err != nil {
		return err
	}
	shares, err := r.env.DB.CampaignShares(ctx, r.id)
	if err != nil {
		return err
	}
	if used, acc := int64(c.UsedAmount), int64(c.AccAmount); used != sum || acc != sum || c.AwardedCount != len(awards) {
		a.add("used amount is not the awards", "used %s, accumulated %s, %d awarded; the %d awards hold %s",
			money.Format(used), money.Format(acc), c.AwardedCount, len(awards), money.Format(sum))
	}
	if c.UsedAmount > c.Budget {
		a.add("overspent", "used %s > budget %s", money.Format(int64(c.UsedAmount)), money.Format(int64(c.Budget)))
	}
	split := make(map[int]store.Fen, len(shares))
	for _, sh := range shares {
		split[sh.Seq] = sh.Amount
	}
	held := r.sim.Transfers()
	numbers := make(map[string]bool, len(awards))
	for _, aw := range awards {
		numbers[aw.OutTradeNo] = true
		if share, ok := split[aw.Seq]; !ok || share != aw.Amount {
			a.add("award is not its share", "award %d is %s; its share %s", aw.Seq, money.Format(int64(aw.Amount)),
				money.Format(int64(share)))
		}
		if aw.Status != store.AwardTransferred {
			why := ""
			if aw.LastError != "" {
				why = ": " + aw.LastError
			}
			a.add("not paid out", "award %d of user %d is %s after %d attempts%s", aw.Seq, aw.UserID, aw.Status, aw.Attempts, why)
			continue
		}
		rec, ok := held[aw.OutTradeNo]
		switch {
		case !ok:
			a.add("transferred but never applied", "award %d: the service has no %s", aw.Seq, aw.OutTradeNo)
		case rec.Applied != 1:
			a.add("applied more than once", "%s applied %d times", aw.OutTradeNo, rec.Applied)
		case rec.UserID != aw.UserID || rec.Amount != int64(aw.Amount) || rec.TransferID != aw.TransferID:
			a.add("paid other than awarded", "award %d: %s to user %d as %s; the service applied %s to user %d as %s",
				aw.Seq, money.Format(int64(aw.Amount)), aw.UserID, aw.TransferID,
				money.Format(rec.Amount), rec.UserID, rec.TransferID)
		}
	}
	for no, rec := range held {
		if !numbers[no] {
			a.add("applied without an award", "%s: %s to user %d", no, money.Format(rec.Amount), rec.UserID)
		}
	}
	count, fen := r.sim.TotalApplied()
	switch {
	case r.sim.MaxApplications() > 1:
		a.add("applied more than once", "an out-trade-no applied %d times", r.sim.MaxApplications())
	case count > len(awards) || fen > sum:
		a.add("paid more than awarded", "the service moved %s in %d transfers; the %d awards hold %s",
			money.Format(fen), count, len(awards), money.Format(sum))
	case count < len(awards) || fen < sum:
		a.add("paid less than awarded", "the service moved %s in %d transfers; the %d awards hold %s",
			money.Format(fen), count, len(awards), money.Format(sum))
	}
	return nil
}
