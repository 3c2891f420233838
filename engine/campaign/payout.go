package campaign

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/engine/money"
	"github.com/grab-engine/grab/engine/transfer"
	"github.com/grab-engine/grab/store"
)

// payoutHooks let tests stop a payout where a crash would (export_test.go).
type payoutHooks struct {
	// afterTransferring runs once the award is 7 in MySQL, before the call.
	afterTransferring func(context.Context, store.Award) error
	// beforeTransferred runs after the service confirmed, before 7 -> 4.
	beforeTransferred func(context.Context, store.Award) error
}

type payoutMetrics struct {
	attempts       prometheus.Counter
	succeeded      prometheus.Counter
	failed         prometheus.Counter
	needsAttention prometheus.Counter
	parked         prometheus.Gauge
	overdue        prometheus.Gauge
}

func newPayoutMetrics() payoutMetrics {
	return payoutMetrics{
		attempts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "grab_payout_transfers_attempted_total", Help: "Transfer calls made for campaign awards (queries excluded)."}),
		succeeded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "grab_payout_transfers_succeeded_total", Help: "Campaign awards confirmed transferred (by a transfer or a query)."}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "grab_payout_transfers_failed_total", Help: "Transfer calls that failed or whose outcome is unknown; the award stays transferring."}),
		needsAttention: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "grab_payout_needs_attention_total", Help: "Campaign awards parked for a person after too many attempts or a conflict."}),
		parked: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "grab_payout_needs_attention_awards", Help: "Campaign awards in needs_attention, as of the last payout sweep."}),
		overdue: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "grab_payout_overdue_awards", Help: "Campaign awards stuck in received or transferring past the retry threshold, at the start of the last sweep."}),
	}
}

func (m payoutMetrics) register(reg prometheus.Registerer) {
	reg.MustRegister(m.attempts, m.succeeded, m.failed, m.needsAttention, m.parked, m.overdue)
}

// recordTimeout bounds writing down what the service answered. It is not
// the call's deadline: a call that used all of its time must still be recorded.
const recordTimeout = 10 * time.Second

// transferAward calls the service for an award that is transferring, outside
// any transaction, and records what it answered.
func (s *Service) transferAward(ctx context.Context, row store.Award) (Award, error) {
	// The award is 7 now: finish the call and its record even if the caller goes away.
	ctx = context.WithoutCancel(ctx)
	if err := s.limit.Wait(ctx); err != nil { // a call past the process's rate waits its turn
		return awardView(row), fmt.Errorf("%w: %v", engine.ErrPayoutInProgress, err)
	}
	callCtx, cancel := context.WithTimeout(ctx, s.cfg.TransferTimeout)
	s.m.attempts.Inc()
	res, err := s.xfer.Transfer(callCtx, transfer.Transfer{OutTradeNo: row.OutTradeNo, UserID: row.UserID, Amount: int64(row.Amount),
		Memo: fmt.Sprintf("campaign %d award %d", row.CampaignID, row.Seq)})
	cancel()
	if err == nil && res.Outcome != transfer.Succeeded {
		err = errors.New("transfer answered without success")
	}
	recCtx, cancel := context.WithTimeout(ctx, recordTimeout)
	defer cancel()
	return s.settlePayout(recCtx, row, res, err)
}

// settlePayout records the outcome of a transfer or query for an award this
// caller holds in transferring with row.Attempts: success moves it to
// transferred (from 7 only); an unknown outcome leaves it 7 for the sweeper
// unless its attempts are spent; a conflict parks it at once. Anything but
// success answers engine.ErrPayoutInProgress.
func (s *Service) settlePayout(ctx context.Context, row store.Award, res transfer.Result, err error) (Award, error) {
	a := awardView(row)
	now := s.clock.Now().UTC()
	// A zero amount is the service not saying; no award is zero.
	if err == nil && res.Amount != 0 && res.Amount != int64(row.Amount) {
		err = fmt.Errorf("%w: the service applied %s, the award is %s", transfer.ErrConflict,
			money.Format(res.Amount), money.Format(int64(row.Amount)))
	}
	switch {
	case errors.Is(err, transfer.ErrConflict):
		a.Payout = PayoutNeedsAttention
		return a, s.park(ctx, row, err.Error(), now)
	case err != nil:
		s.m.failed.Inc()
		if row.Attempts >= s.cfg.PayoutMaxAttempts {
			a.Payout = PayoutNeedsAttention
			return a, s.park(ctx, row, fmt.Sprintf("%d attempts; last: %v", row.Attempts, err), now)
		}
		if err := s.db.NotePayoutError(ctx, row.CampaignID, row.Seq, row.Attempts, err.Error(), now); err != nil {
			s.log.WarnContext(ctx, "payout: cannot record a failed attempt", "out_trade_no", row.OutTradeNo, "err", err)
		}
		s.log.InfoContext(ctx, "payout: transfer failed or unknown; the sweeper retries", "out_trade_no", row.OutTradeNo,
			"attempts", row.Attempts, "err", err)
		return a, engine.ErrPayoutInProgress
	}
	if h := s.hooks.beforeTransferred; h != nil {
		if err := h(ctx, row); err != nil {
			return a, err
		}
	}
	moved, err := s.db.MarkTransferred(ctx, row.CampaignID, row.Seq, res.TransferID, now)
	if err != nil {
		// The money moved; the row stays 7 and the sweeper's query settles it.
		s.log.WarnContext(ctx, "payout: transferred but not recorded; the sweeper settles it", "out_trade_no", row.OutTradeNo, "err", err)
		return a, fmt.Errorf("%w: transferred, not yet recorded: %v", engine.ErrPayoutInProgress, err)
	}
	if moved {
		s.m.succeeded.Inc()
	}
	a.Payout, a.TransferredAt = PayoutTransferred, &now
	if !moved {
		// Someone else recorded it first; show what the store holds.
		if cur, err := s.db.Award(ctx, row.CampaignID, row.Seq); err == nil {
			a = awardView(cur)
		}
	}
	return a, nil
}

// park moves an award a caller holds in transferring to needs_attention and
// raises the alert. It answers engine.ErrPayoutInProgress: to the user the payout
// is still under way, now in a person's hands.
func (s *Service) park(ctx context.Context, row store.Award, reason string, now time.Time) error {
	parked, err := s.db.ParkPayout(ctx, row.CampaignID, row.Seq, row.Attempts, reason, now)
	if err != nil {
		s.log.WarnContext(ctx, "payout: cannot park an award; it stays transferring", "out_trade_no", row.OutTradeNo, "err", err)
		return engine.ErrPayoutInProgress
	}
	if parked {
		s.m.needsAttention.Inc()
		s.log.ErrorContext(ctx, "payout: award parked as needs_attention; a person must settle it", "campaign_id", row.CampaignID,
			"seq", row.Seq, "user_id", row.UserID, "amount", money.Format(int64(row.Amount)), "out_trade_no", row.OutTradeNo,
			"attempts", row.Attempts, "reason", reason)
	}
	return engine.ErrPayoutInProgress
}

// PayoutSweep says what one payout sweep did.
type PayoutSweep struct {
	Claimed     int // overdue awards this sweep took over
	Transferred int // confirmed transferred (by a query or a transfer)
	Pending     int // still transferring: the next sweep tries again
	Parked      int // moved to needs_attention
}

// sweepPage is how many overdue awards one store query returns.
const sweepPage = 200

// SweepPayouts is one pass of the payout sweeper (the batch job that re-drives status 7; docs/glossary.md). It
// takes every award stuck in transferring (or received, unpaid) for longer
// than PayoutRetryAfter, asks the service about its out-trade-no first, and
// if the service never applied it, transfers again with the same number.
//
// Each award is claimed with a conditional update that bumps its attempts,
// so of several sweepers (or grabd processes) only one drives it at a time.
// That only saves work: the service applies an out-trade-no at most once, so
// money moves at most once even when two drivers race.
func (s *Service) SweepPayouts(ctx context.Context) (PayoutSweep, error) {
	var sweep PayoutSweep
	if s.xfer == nil {
		return sweep, nil
	}
	before := s.clock.Now().UTC().Add(-s.cfg.PayoutRetryAfter)
	if n, err := s.db.CountOverdue(ctx, before); err == nil {
		s.m.overdue.Set(float64(n))
	}
	var mu sync.Mutex
	for ctx.Err() == nil {
		rows, err := s.db.DuePayouts(ctx, before, sweepPage)
		if err != nil {
			return sweep, err
		}
		claimed := 0
		work := make(chan store.Award)
		var wg sync.WaitGroup
		for range min(s.cfg.PayoutWorkers, len(rows)) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for row := range work {
					outcome, ok := s.drivePayout(ctx, row)
					mu.Lock()
					if ok {
						claimed++
						sweep.Claimed++
						switch outcome {
						case PayoutTransferred:
							sweep.Transferred++
						case PayoutNeedsAttention:
							sweep.Parked++
						default:
							sweep.Pending++
						}
					}
					mu.Unlock()
				}
			}()
		}
		for _, r := range rows {
			work <- r
		}
		close(work)
		wg.Wait()
		// A claimed award is no longer overdue, so the next page is new work;
		// a page with nothing claimed means other sweepers have the rest.
		if len(rows) < sweepPage || claimed == 0 {
			break
		}
	}
	if n, err := s.db.CountAwards(ctx, PayoutNeedsAttention); err == nil {
		s.m.parked.Set(float64(n))
	}
	return sweep, ctx.Err()
}

// drivePayout claims one overdue award and drives it: query, then transfer
// with the same number. It reports the award's payout status after, and
// whether this sweeper claimed it.
func (s *Service) drivePayout(ctx context.Context, row store.Award) (string, bool) {
	now := s.clock.Now().UTC()
	ok, err := s.db.ClaimPayout(ctx, row.CampaignID, row.Seq, row.Status, row.Attempts, now)
	if err != nil || !ok {
		if err != nil {
			s.log.WarnContext(ctx, "payout sweep: claim failed", "out_trade_no", row.OutTradeNo, "err", err)
		}
		return "", false
	}
	row.Status, row.Attempts = PayoutTransferring, row.Attempts+1
	qctx, cancel := context.WithTimeout(ctx, s.cfg.TransferTimeout)
	q, qerr := s.xfer.QueryTransfer(qctx, row.OutTradeNo)
	cancel()
	var a Award
	if qerr == nil && q.Outcome == transfer.Succeeded {
		// Applied by an earlier attempt whose reply (or 7 -> 4 update) was lost.
		a, err = s.settlePayout(ctx, row, q, nil)
	} else {
		// Never applied, or the query failed: a transfer with the same number
		// is safe either way.
		a, err = s.transferAward(ctx, row)
	}
	if err != nil && !errors.Is(err, engine.ErrPayoutInProgress) {
		s.log.WarnContext(ctx, "payout sweep: award left transferring", "out_trade_no", row.OutTradeNo, "err", err)
	}
	return a.Payout, true
}

// RunPayoutSweeper runs SweepPayouts every PayoutSweepInterval until ctx
// ends, and in PayoutAsync mode the payout pool (RunPayoutPool) beside it.
// Without a transfer service it returns at once.
func (s *Service) RunPayoutSweeper(ctx context.Context) error {
	if s.xfer == nil {
		s.log.InfoContext(ctx, "payout sweeper: no transfer service; campaign awards stay received")
		return nil
	}
	pool := make(chan error, 1)
	go func() { pool <- s.RunPayoutPool(ctx) }()
	defer func() { <-pool }()
	return s.core.Every(ctx, s.cfg.PayoutSweepInterval, "payout sweep", func(ctx context.Context) error {
		_, err := s.SweepPayouts(ctx)
		return err
	})
}

// RetryPayout is a person's retry of an award parked in needs_attention:
// one more attempt as the sweeper makes it (query the service first, then
// transfer with the same number). It answers the award as it stands after;
// a failure parks it again. engine.ErrAwardReceived when it was transferred, and
// engine.ErrPayoutInProgress when it is not parked (the sweeper has it).
func (s *Service) RetryPayout(ctx context.Context, campaignID int64, seq int) (Award, error) {
	if campaignID <= 0 || seq <= 0 {
		return Award{}, engine.ErrNotFound
	}
	if s.xfer == nil {
		return Award{}, fmt.Errorf("%w: no transfer service is configured", engine.ErrPayoutInProgress)
	}
	row, err := s.db.Award(ctx, campaignID, seq)
	if err != nil {
		return Award{}, engine.FromStore(err)
	}
	switch row.Status {
	case PayoutTransferred:
		return awardView(row), engine.ErrAwardReceived
	case PayoutNeedsAttention:
	default:
		return awardView(row), engine.ErrPayoutInProgress
	}
	if _, claimed := s.drivePayout(ctx, row); !claimed {
		return awardView(row), fmt.Errorf("%w: another retry has it", engine.ErrPayoutInProgress)
	}
	row, err = s.db.Award(ctx, campaignID, seq)
	if err != nil {
		return Award{}, err
	}
	return awardView(row), nil
}
