package transfersim_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/grab-engine/grab/engine/enginetest"
	"github.com/grab-engine/grab/engine/transfer"
	"github.com/grab-engine/grab/engine/transfersim"
)

var secret = []byte("test-secret")

// setup serves a simulator on loopback and returns it with a production
// client of it.
func setup(tb testing.TB, f transfersim.Faults, timeout time.Duration) (*transfersim.Sim, *transfer.Client, string) {
	tb.Helper()
	sim := transfersim.New(secret, f, 1)
	srv := httptest.NewServer(sim)
	tb.Cleanup(srv.Close)
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	tb.Cleanup(hc.CloseIdleConnections)
	return sim, transfer.NewClient(srv.URL, secret, timeout, hc), srv.URL
}

var award = transfer.Transfer{OutTradeNo: "award-7-42", UserID: 42, Amount: 123, Memo: "campaign 7"}

func TestTransfer(t *testing.T) {
	ctx := context.Background()
	sim, c, _ := setup(t, transfersim.Faults{}, time.Second)

	res, err := c.Transfer(ctx, award)
	if err != nil {
		t.Fatal(err)
	}
	if res.Outcome != transfer.Succeeded || res.Amount != 123 || res.Duplicate || res.TransferID == "" {
		t.Fatalf("transfer = %+v, want succeeded for 123 fen, not duplicate, with an id", res)
	}
	q, err := c.QueryTransfer(ctx, award.OutTradeNo)
	if err != nil || q != res {
		t.Fatalf("query = %+v, %v; want %+v", q, err, res)
	}
	if got := sim.Balance(42); got != 123 {
		t.Errorf("balance = %d, want 123", got)
	}
	if n, fen := sim.TotalApplied(); n != 1 || fen != 123 {
		t.Errorf("total applied = %d, %d fen; want 1, 123", n, fen)
	}
	if rec := sim.Transfers()[award.OutTradeNo]; rec.Transfer != award || rec.TransferID != res.TransferID {
		t.Errorf("record = %+v, want %+v as %s", rec, award, res.TransferID)
	}
}

func TestTransferRepeatAnswersFirstResult(t *testing.T) {
	ctx := context.Background()
	sim, c, _ := setup(t, transfersim.Faults{}, time.Second)
	first, err := c.Transfer(ctx, award)
	if err != nil {
		t.Fatal(err)
	}
	again := award
	again.Memo = "another memo does not matter"
	second, err := c.Transfer(ctx, again)
	if err != nil {
		t.Fatal(err)
	}
	if want := (transfer.Result{Outcome: transfer.Succeeded, TransferID: first.TransferID, Amount: 123, Duplicate: true}); second != want {
		t.Errorf("repeat = %+v, want %+v", second, want)
	}
	if sim.Applied(award.OutTradeNo) != 1 || sim.Attempts(award.OutTradeNo) != 2 || sim.Balance(42) != 123 {
		t.Errorf("applied %d times in %d attempts, balance %d; want once in 2, 123",
			sim.Applied(award.OutTradeNo), sim.Attempts(award.OutTradeNo), sim.Balance(42))
	}
}

func TestTransferConflict(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*transfer.Transfer)
	}{
		{"other amount", func(t *transfer.Transfer) { t.Amount++ }},
		{"other user", func(t *transfer.Transfer) { t.UserID++ }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			sim, c, _ := setup(t, transfersim.Faults{}, time.Second)
			if _, err := c.Transfer(ctx, award); err != nil {
				t.Fatal(err)
			}
			other := award
			tc.change(&other)
			if _, err := c.Transfer(ctx, other); !errors.Is(err, transfer.ErrConflict) {
				t.Fatalf("err = %v, want ErrTransferConflict", err)
			}
			if n, fen := sim.TotalApplied(); n != 1 || fen != 123 || sim.Balance(42) != 123 {
				t.Errorf("total applied = %d, %d fen, balance %d; want only the first transfer", n, fen, sim.Balance(42))
			}
		})
	}
}

// LastApplied is when money last moved: a repeat of an applied number
// moves none and leaves it as it was.
func TestLastApplied(t *testing.T) {
	ctx := context.Background()
	sim, c, _ := setup(t, transfersim.Faults{}, time.Second)
	if at := sim.LastApplied(); !at.IsZero() {
		t.Fatalf("last applied %v before any transfer", at)
	}
	before := time.Now()
	if _, err := c.Transfer(ctx, award); err != nil {
		t.Fatal(err)
	}
	first := sim.LastApplied()
	if first.Before(before) || first.After(time.Now()) {
		t.Fatalf("last applied %v; want within the call, from %v", first, before)
	}
	if _, err := c.Transfer(ctx, award); err != nil {
		t.Fatal(err)
	}
	if at := sim.LastApplied(); !at.Equal(first) {
		t.Errorf("a repeat moved last applied from %v to %v", first, at)
	}
}

func TestQueryUnknown(t *testing.T) {
	_, c, _ := setup(t, transfersim.Faults{}, time.Second)
	res, err := c.QueryTransfer(context.Background(), "never-sent")
	if err != nil || res.Outcome != transfer.Unknown {
		t.Fatalf("query = %+v, %v; want TransferUnknown", res, err)
	}
}

// send makes one raw request; sign, when not nil, signs it.
func send(t *testing.T, method, url string, body []byte, sign func(*http.Request)) (int, transfer.ErrorReply) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if sign != nil {
		sign(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e transfer.ErrorReply
	raw, _ := io.ReadAll(resp.Body)
	json.Unmarshal(raw, &e)
	return resp.StatusCode, e
}

func TestSignature(t *testing.T) {
	body, _ := json.Marshal(transfer.NewRequest(award))
	signWith := func(key []byte, at time.Time, signed []byte) func(*http.Request) {
		return func(r *http.Request) { transfer.SignRequest(key, r, signed, at) }
	}
	now := time.Now()
	for _, tc := range []struct {
		name string
		sign func(*http.Request)
		want int
	}{
		{"valid", signWith(secret, now, body), http.StatusOK},
		{"four minutes late is still fresh", signWith(secret, now.Add(-4*time.Minute), body), http.StatusOK},
		{"unsigned", nil, http.StatusUnauthorized},
		{"other secret", signWith([]byte("other"), now, body), http.StatusUnauthorized},
		{"body changed after signing", signWith(secret, now, []byte(`{}`)), http.StatusUnauthorized},
		{"stale timestamp", signWith(secret, now.Add(-6*time.Minute), body), http.StatusUnauthorized},
		{"future timestamp", signWith(secret, now.Add(6*time.Minute), body), http.StatusUnauthorized},
		{"timestamp changed after signing", func(r *http.Request) {
			transfer.SignRequest(secret, r, body, now)
			r.Header.Set(transfer.HeaderTimestamp, fmt.Sprint(now.Unix()+1))
		}, http.StatusUnauthorized},
		{"signature not hex", func(r *http.Request) {
			transfer.SignRequest(secret, r, body, now)
			r.Header.Set(transfer.HeaderSignature, "zz")
		}, http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sim, _, base := setup(t, transfersim.Faults{}, time.Second)
			status, e := send(t, http.MethodPost, base+transfer.PathTransfers, body, tc.sign)
			if status != tc.want {
				t.Fatalf("status = %d %+v, want %d", status, e, tc.want)
			}
			if wantApplied := map[bool]int{true: 1}[tc.want == http.StatusOK]; sim.Applied(award.OutTradeNo) != wantApplied {
				t.Errorf("applied %d times, want %d", sim.Applied(award.OutTradeNo), wantApplied)
			}
			if status == http.StatusUnauthorized && e.Error != transfer.CodeUnauthorized {
				t.Errorf("error = %q, want %q", e.Error, transfer.CodeUnauthorized)
			}
		})
	}
	t.Run("query unsigned", func(t *testing.T) {
		_, _, base := setup(t, transfersim.Faults{}, time.Second)
		if status, _ := send(t, http.MethodGet, base+transfer.PathTransfers+"/award-7-42", nil, nil); status != http.StatusUnauthorized {
			t.Errorf("status = %d, want 401", status)
		}
	})
}

func TestMalformed(t *testing.T) {
	for _, body := range []string{
		``,
		`not json`,
		`{"out_trade_no":"a-1","user_id":42,"amount":"1.23"} {}`,
		`{"out_trade_no":"a-1","user_id":42,"amount":1.23}`,
		`{"out_trade_no":"a-1","user_id":42,"amount":"1.2"}`,
		`{"out_trade_no":"a-1","user_id":42,"amount":"1.234"}`,
		`{"out_trade_no":"a-1","user_id":42,"amount":"-1.23"}`,
		`{"out_trade_no":"a-1","user_id":42,"amount":"01.23"}`,
		`{"out_trade_no":"a-1","user_id":42,"amount":"1e2"}`,
		`{"out_trade_no":"a-1","user_id":42,"amount":"0.00"}`,
		`{"out_trade_no":"a-1","user_id":0,"amount":"1.23"}`,
		`{"out_trade_no":"","user_id":42,"amount":"1.23"}`,
		`{"out_trade_no":"a 1","user_id":42,"amount":"1.23"}`,
		`{"out_trade_no":"a/1","user_id":42,"amount":"1.23"}`,
	} {
		t.Run(body, func(t *testing.T) {
			sim, _, base := setup(t, transfersim.Faults{}, time.Second)
			status, e := send(t, http.MethodPost, base+transfer.PathTransfers, []byte(body), func(r *http.Request) {
				transfer.SignRequest(secret, r, []byte(body), time.Now())
			})
			if status != http.StatusBadRequest || e.Error != transfer.CodeMalformed {
				t.Errorf("answer = %d %+v, want 400 malformed", status, e)
			}
			if n, _ := sim.TotalApplied(); n != 0 {
				t.Errorf("applied %d transfers, want none", n)
			}
		})
	}
}

func TestErrorsApplyNothing(t *testing.T) {
	ctx := context.Background()
	sim, c, _ := setup(t, transfersim.Faults{ErrorRate: 1}, time.Second)
	if _, err := c.Transfer(ctx, award); err == nil || errors.Is(err, transfer.ErrConflict) {
		t.Fatalf("err = %v, want an outcome-unknown error", err)
	}
	if sim.Attempts(award.OutTradeNo) != 0 || sim.Balance(42) != 0 {
		t.Errorf("%d attempts, balance %d; want nothing", sim.Attempts(award.OutTradeNo), sim.Balance(42))
	}
	if _, err := c.QueryTransfer(ctx, award.OutTradeNo); err == nil {
		t.Error("query succeeded through ErrorRate 1")
	}
	sim.SetFaults(transfersim.Faults{})
	if res, err := c.QueryTransfer(ctx, award.OutTradeNo); err != nil || res.Outcome != transfer.Unknown {
		t.Errorf("query = %+v, %v; want TransferUnknown", res, err)
	}
}

func TestLostReplyWasApplied(t *testing.T) {
	ctx := context.Background()
	sim, c, _ := setup(t, transfersim.Faults{LoseReplyRate: 1}, time.Second)
	if _, err := c.Transfer(ctx, award); err == nil {
		t.Fatal("transfer answered although its reply was lost")
	}
	sim.SetFaults(transfersim.Faults{})
	res, err := c.QueryTransfer(ctx, award.OutTradeNo)
	if err != nil || res.Outcome != transfer.Succeeded || res.Amount != 123 {
		t.Fatalf("query = %+v, %v; want succeeded for 123 fen", res, err)
	}
	retry, err := c.Transfer(ctx, award)
	if err != nil || !retry.Duplicate || retry.TransferID != res.TransferID {
		t.Errorf("retry = %+v, %v; want the first transfer as a duplicate", retry, err)
	}
	if sim.Applied(award.OutTradeNo) != 1 || sim.Balance(42) != 123 {
		t.Errorf("applied %d times, balance %d; want once, 123", sim.Applied(award.OutTradeNo), sim.Balance(42))
	}
}

func TestNetworkDuplicateAppliesOnce(t *testing.T) {
	ctx := context.Background()
	sim, c, _ := setup(t, transfersim.Faults{DuplicateRate: 1}, time.Second)
	for i := range 20 {
		tr := transfer.Transfer{OutTradeNo: fmt.Sprintf("dup-%d", i), UserID: 42, Amount: 100}
		// Either copy may win, so the answer may say duplicate already.
		if res, err := c.Transfer(ctx, tr); err != nil || res.Outcome != transfer.Succeeded {
			t.Fatalf("transfer = %+v, %v; want succeeded", res, err)
		}
		if sim.Applied(tr.OutTradeNo) != 1 || sim.Attempts(tr.OutTradeNo) != 2 {
			t.Errorf("%s applied %d times in %d attempts, want once in 2", tr.OutTradeNo, sim.Applied(tr.OutTradeNo), sim.Attempts(tr.OutTradeNo))
		}
	}
	if sim.Balance(42) != 2000 || sim.MaxApplications() != 1 {
		t.Errorf("balance %d, max applications %d; want 2000, 1", sim.Balance(42), sim.MaxApplications())
	}
}

func TestTimeoutSaysNothingOfTheOutcome(t *testing.T) {
	ctx := context.Background()
	sim, c, _ := setup(t, transfersim.Faults{Latency: 500 * time.Millisecond}, 50*time.Millisecond)
	if _, err := c.Transfer(ctx, award); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want a timeout", err)
	}
	// The service carries on after the client gave up.
	sim.SetFaults(transfersim.Faults{})
	enginetest.WaitFor(t, "the slow request to land", func() bool { return sim.Applied(award.OutTradeNo) > 0 })
	if res, err := c.QueryTransfer(ctx, award.OutTradeNo); err != nil || res.Outcome != transfer.Succeeded {
		t.Errorf("query = %+v, %v; want succeeded after the slow request landed", res, err)
	}
}

// TestStorm has 50 payers (10 with -short) push the same 200 payouts
// through a service that fails half the requests, loses a tenth of its
// replies and duplicates a tenth of the requests, each payer retrying with
// the same number until it is answered: every payout moves money exactly
// once and every payer learns the same transfer.
func TestStorm(t *testing.T) {
	payers, payouts := 50, 200
	if testing.Short() {
		payers = 10
	}
	ctx := context.Background()
	sim, c, _ := setup(t, transfersim.Faults{ErrorRate: 0.5, LoseReplyRate: 0.1, DuplicateRate: 0.1}, 5*time.Second)
	payout := func(i int) transfer.Transfer {
		return transfer.Transfer{OutTradeNo: fmt.Sprintf("storm-%d", i), UserID: int64(i%7 + 1), Amount: int64(100 + i)}
	}

	var (
		mu    sync.Mutex
		ids   = map[string]map[string]bool{} // transfer ids each number was answered with
		fresh = map[string]int{}             // answers that were not duplicates
		wg    sync.WaitGroup
	)
	for range payers {
		wg.Go(func() {
			for i := range payouts {
				tr := payout(i)
				res, err := payUntilAnswered(ctx, c, tr)
				if err != nil {
					t.Error(err)
					return
				}
				if res.Amount != tr.Amount {
					t.Errorf("%s answered %d fen, want %d", tr.OutTradeNo, res.Amount, tr.Amount)
				}
				mu.Lock()
				if ids[tr.OutTradeNo] == nil {
					ids[tr.OutTradeNo] = map[string]bool{}
				}
				ids[tr.OutTradeNo][res.TransferID] = true
				if !res.Duplicate {
					fresh[tr.OutTradeNo]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()

	var wantFen int64
	wantBalance := map[int64]int64{}
	for i := range payouts {
		tr := payout(i)
		wantFen += tr.Amount
		wantBalance[tr.UserID] += tr.Amount
		if n := sim.Applied(tr.OutTradeNo); n != 1 {
			t.Errorf("%s applied %d times, want once", tr.OutTradeNo, n)
		}
		if len(ids[tr.OutTradeNo]) != 1 || fresh[tr.OutTradeNo] > 1 {
			t.Errorf("%s answered with ids %v, %d of them fresh; want one id, at most one fresh answer",
				tr.OutTradeNo, ids[tr.OutTradeNo], fresh[tr.OutTradeNo])
		}
	}
	if n, fen := sim.TotalApplied(); n != payouts || fen != wantFen || sim.MaxApplications() != 1 {
		t.Errorf("total applied = %d, %d fen, max applications %d; want %d, %d, 1", n, fen, sim.MaxApplications(), payouts, wantFen)
	}
	for user, want := range wantBalance {
		if got := sim.Balance(user); got != want {
			t.Errorf("user %d balance = %d, want %d", user, got, want)
		}
	}
}

// payUntilAnswered retries tr with the same number, as the payout sweeper
// does, until the service answers.
func payUntilAnswered(ctx context.Context, c *transfer.Client, tr transfer.Transfer) (transfer.Result, error) {
	for range 200 {
		res, err := c.Transfer(ctx, tr)
		if err == nil || errors.Is(err, transfer.ErrConflict) {
			return res, err
		}
	}
	return transfer.Result{}, fmt.Errorf("%s: no answer in 200 tries", tr.OutTradeNo)
}

func TestServe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sim := transfersim.New(secret, transfersim.Faults{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- sim.Serve(ctx, ln) }()

	c := transfer.NewClient("http://"+ln.Addr().String(), secret, time.Second, nil)
	if _, err := c.Transfer(ctx, award); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-served; err != nil {
		t.Errorf("serve = %v, want nil after ctx ends", err)
	}
	if sim.Balance(42) != 123 {
		t.Errorf("balance = %d, want 123", sim.Balance(42))
	}
}
