package gatewaysim_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/grab-engine/grab/engine/money"

	"github.com/grab-engine/grab/engine/channel"
	"github.com/grab-engine/grab/engine/enginetest"
	"github.com/grab-engine/grab/engine/gateway"
	"github.com/grab-engine/grab/engine/gatewaysim"
)

var secret = []byte("gatewaysim-secret")

// fast is a compressed resend schedule: 8 sends in all.
var fast = []time.Duration{5 * time.Millisecond, 5 * time.Millisecond, 5 * time.Millisecond, 5 * time.Millisecond,
	5 * time.Millisecond, 5 * time.Millisecond, 5 * time.Millisecond}

// receiver is grabd's notify endpoint as far as the gateway can tell: it
// verifies signatures and answers what answer says (200 by default).
type receiver struct {
	mu       sync.Mutex
	got      []gateway.Notification
	channels []string
	refused  int
	answer   func(n int) int // status of the n-th verified notification, from 0
	url      string
}

func newReceiver(t *testing.T) *receiver {
	rc := &receiver{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		defer rc.mu.Unlock()
		if !gateway.Verify(secret, body, r.Header.Get("X-Grab-Signature")) {
			rc.refused++
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var n gateway.Notification
		if err := json.Unmarshal(body, &n); err != nil {
			t.Errorf("notification %s: %v", body, err)
		}
		status := http.StatusOK
		if rc.answer != nil {
			status = rc.answer(len(rc.got))
		}
		rc.got = append(rc.got, n)
		rc.channels = append(rc.channels, r.URL.Path)
		w.WriteHeader(status)
		w.Write([]byte(`{"ack":"success"}`))
	}))
	t.Cleanup(srv.Close)
	rc.url = srv.URL
	return rc
}

func (rc *receiver) notifications() []gateway.Notification {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]gateway.Notification(nil), rc.got...)
}

// start serves a simulator under /pay and returns it with a client of it
// whose notifications go to rc.
func start(t *testing.T, rc *receiver, opts gatewaysim.Options) (*gatewaysim.Sim, *gateway.Client, string) {
	t.Helper()
	if opts.Resend == nil {
		opts.Resend = fast
	}
	sim := gatewaysim.New(secret, opts)
	t.Cleanup(sim.Close)
	srv := httptest.NewServer(http.StripPrefix("/pay", sim))
	t.Cleanup(srv.Close)
	c, err := gateway.New(gateway.Config{BaseURL: srv.URL + "/pay", Secret: secret, NotifyBase: rc.url, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return sim, c, srv.URL + "/pay"
}

func TestTradeLifecycle(t *testing.T) {
	rc := newReceiver(t)
	sim, c, _ := start(t, rc, gatewaysim.Options{})
	ctx := context.Background()
	trade := channel.Trade{TradeNo: "T7-0a1b", Channel: channel.Unionpay, Amount: 1234}
	for range 2 { // the same trade again creates nothing
		if err := c.CreateTrade(ctx, trade); err != nil {
			t.Fatal(err)
		}
	}
	rec, ok := sim.Trade(trade.TradeNo)
	if !ok || rec.Trade != trade || rec.Creates != 2 || rec.Status != "pending" || rec.NotifyURL != rc.url+"/v1/payments/notify/unionpay" {
		t.Fatalf("gateway holds %+v, %v", rec, ok)
	}
	if err := c.CreateTrade(ctx, channel.Trade{TradeNo: trade.TradeNo, Channel: channel.Unionpay, Amount: 1}); err == nil {
		t.Fatal("the same number for another amount was accepted")
	}
	if r, err := c.QueryTrade(ctx, trade.TradeNo); err != nil || r != (channel.TradeResult{Outcome: channel.TradePending, Amount: 1234}) {
		t.Fatalf("query = %+v, %v", r, err)
	}
	if err := sim.Complete(trade.TradeNo, true); err != nil {
		t.Fatal(err)
	}
	sim.Wait()
	got := rc.notifications()
	if len(got) != 1 || got[0].TradeNo != trade.TradeNo || got[0].Amount != "12.34" || got[0].Result != "success" || got[0].ProviderTxn == "" {
		t.Fatalf("notifications = %+v", got)
	}
	rc.mu.Lock()
	path := rc.channels[0]
	rc.mu.Unlock()
	if path != "/v1/payments/notify/unionpay" {
		t.Fatalf("notified at %s", path)
	}
	r, err := c.QueryTrade(ctx, trade.TradeNo)
	if err != nil || r != (channel.TradeResult{Outcome: channel.TradeSucceeded, Amount: 1234, ProviderTxn: got[0].ProviderTxn}) {
		t.Fatalf("query = %+v, %v", r, err)
	}
	// A later failure does not move a success; it is notified as it stands.
	must(t, sim.Complete(trade.TradeNo, false))
	sim.Wait()
	if got := rc.notifications(); len(got) != 2 || got[1] != got[0] {
		t.Fatalf("notifications = %+v", got)
	}
	sim.Forget(trade.TradeNo)
	if _, err := c.QueryTrade(ctx, trade.TradeNo); !errors.Is(err, channel.ErrTradeUnknown) {
		t.Fatalf("query of a forgotten trade = %v", err)
	}
}

func TestBadSignaturesAreRefused(t *testing.T) {
	rc := newReceiver(t)
	sim, _, base := start(t, rc, gatewaysim.Options{})
	wrong, err := gateway.New(gateway.Config{BaseURL: base, Secret: []byte("not-the-secret"), NotifyBase: rc.url})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := wrong.CreateTrade(ctx, channel.Trade{TradeNo: "T1-aa", Channel: "alipay", Amount: 100}); err == nil {
		t.Fatal("a badly signed create was accepted")
	}
	if _, err := wrong.QueryTrade(ctx, "T1-aa"); err == nil || errors.Is(err, channel.ErrTradeUnknown) {
		t.Fatalf("a badly signed query = %v", err)
	}
	if _, ok := sim.Trade("T1-aa"); ok || sim.Unauthorized() != 2 {
		t.Fatalf("trade kept %v, %d refused", ok, sim.Unauthorized())
	}
	// A query signed over another path (the signature of a body) is refused too.
	req, _ := http.NewRequest(http.MethodGet, base+"/trades/T1-aa", nil)
	req.Header.Set("X-Grab-Signature", gateway.Sign(secret, nil))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

func TestResendsUntilAnswered200(t *testing.T) {
	rc := newReceiver(t)
	rc.answer = func(n int) int {
		if n < 3 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	}
	sim, c, _ := start(t, rc, gatewaysim.Options{})
	if err := c.CreateTrade(context.Background(), channel.Trade{TradeNo: "T2-bb", Channel: "wechat", Amount: 500}); err != nil {
		t.Fatal(err)
	}
	must(t, sim.Complete("T2-bb", false))
	sim.Wait()
	rec, _ := sim.Trade("T2-bb")
	if got := rc.notifications(); len(got) != 4 || got[3].Result != "failed" || rec.Sends != 4 || rec.Acked != 1 || sim.GaveUp() != 0 {
		t.Fatalf("%d notifications, record %+v, gave up %d", len(got), rec, sim.GaveUp())
	}
}

func TestGivesUpAfterTheSchedule(t *testing.T) {
	rc := newReceiver(t)
	sim, c, _ := start(t, rc, gatewaysim.Options{Faults: gatewaysim.Faults{WrongKey: true}})
	if err := c.CreateTrade(context.Background(), channel.Trade{TradeNo: "T3-cc", Channel: "alipay", Amount: 500}); err != nil {
		t.Fatal(err)
	}
	must(t, sim.Complete("T3-cc", true))
	sim.Wait()
	rec, _ := sim.Trade("T3-cc")
	rc.mu.Lock()
	refused := rc.refused
	rc.mu.Unlock()
	if rec.Sends != 8 || rec.Acked != 0 || refused != 8 || len(rc.notifications()) != 0 || sim.GaveUp() != 1 {
		t.Fatalf("record %+v, %d refused, gave up %d", rec, refused, sim.GaveUp())
	}
}

func TestNotificationFaults(t *testing.T) {
	ctx := context.Background()
	t.Run("lose", func(t *testing.T) {
		rc := newReceiver(t)
		sim, c, _ := start(t, rc, gatewaysim.Options{Faults: gatewaysim.Faults{LoseRate: 1}})
		must(t, c.CreateTrade(ctx, channel.Trade{TradeNo: "T4-a", Channel: "alipay", Amount: 100}))
		must(t, sim.Complete("T4-a", true))
		sim.Wait()
		if r, err := c.QueryTrade(ctx, "T4-a"); len(rc.notifications()) != 0 || err != nil || r.Outcome != channel.TradeSucceeded {
			t.Fatalf("%d notifications; query %+v, %v", len(rc.notifications()), r, err)
		}
	})
	t.Run("duplicate", func(t *testing.T) {
		rc := newReceiver(t)
		sim, c, _ := start(t, rc, gatewaysim.Options{Faults: gatewaysim.Faults{DuplicateRate: 1}})
		must(t, c.CreateTrade(ctx, channel.Trade{TradeNo: "T4-b", Channel: "alipay", Amount: 100}))
		must(t, sim.Complete("T4-b", true))
		sim.Wait()
		if got := rc.notifications(); len(got) != 2 || got[0] != got[1] {
			t.Fatalf("notifications %+v", got)
		}
	})
	t.Run("delay", func(t *testing.T) {
		rc := newReceiver(t)
		sim, c, _ := start(t, rc, gatewaysim.Options{Faults: gatewaysim.Faults{Delay: 50 * time.Millisecond}, Seed: 3})
		for _, no := range []string{"T4-c", "T4-d", "T4-e"} {
			must(t, c.CreateTrade(ctx, channel.Trade{TradeNo: no, Channel: "wechat", Amount: 100}))
			must(t, sim.Complete(no, true))
		}
		sim.Wait()
		if got := rc.notifications(); len(got) != 3 {
			t.Fatalf("notifications %+v", got)
		}
	})
	t.Run("reorder", func(t *testing.T) {
		rc := newReceiver(t)
		sim, c, _ := start(t, rc, gatewaysim.Options{Faults: gatewaysim.Faults{Hold: true}, Seed: 1})
		var order []string
		for i := range 8 {
			no := "T5-" + string(rune('a'+i))
			order = append(order, no)
			must(t, c.CreateTrade(ctx, channel.Trade{TradeNo: no, Channel: "wechat", Amount: 100}))
			must(t, sim.Complete(no, i%2 == 0))
		}
		if len(rc.notifications()) != 0 {
			t.Fatal("held notifications were sent")
		}
		sim.Flush()
		sim.Wait()
		got := rc.notifications()
		inOrder := len(got) == len(order)
		seen := map[string]bool{}
		for i, n := range got {
			seen[n.TradeNo] = true
			inOrder = inOrder && n.TradeNo == order[i]
		}
		if len(got) != 8 || len(seen) != 8 || inOrder {
			t.Fatalf("flushed %+v; want all 8, shuffled", got)
		}
	})
	t.Run("auto complete", func(t *testing.T) {
		rc := newReceiver(t)
		_, c, _ := start(t, rc, gatewaysim.Options{AutoComplete: 10 * time.Millisecond, AutoFail: true})
		must(t, c.CreateTrade(ctx, channel.Trade{TradeNo: "T6-a", Channel: "alipay", Amount: 100}))
		enginetest.WaitFor(t, "the auto-completed trade's notification", func() bool { return len(rc.notifications()) > 0 })
		if got := rc.notifications(); len(got) != 1 || got[0].Result != "failed" {
			t.Fatalf("notifications %+v", got)
		}
	})
	t.Run("errors", func(t *testing.T) {
		rc := newReceiver(t)
		sim, c, _ := start(t, rc, gatewaysim.Options{Faults: gatewaysim.Faults{ErrorRate: 1}})
		if err := c.CreateTrade(ctx, channel.Trade{TradeNo: "T6-b", Channel: "alipay", Amount: 100}); err == nil {
			t.Fatal("create through a failing gateway succeeded")
		}
		if _, err := c.QueryTrade(ctx, "T6-b"); err == nil || errors.Is(err, channel.ErrTradeUnknown) {
			t.Fatalf("query through a failing gateway = %v; want an ordinary error", err)
		}
		sim.SetFaults(gatewaysim.Faults{})
		if err := c.CreateTrade(ctx, channel.Trade{TradeNo: "T6-b", Channel: "alipay", Amount: 100}); err != nil {
			t.Fatal(err)
		}
	})
}

// persisted starts a simulator keeping its trades at path, as start does.
func persisted(t *testing.T, rc *receiver, path string, opts gatewaysim.Options) (*gatewaysim.Sim, *gateway.Client) {
	t.Helper()
	sim, c, _ := start(t, rc, opts)
	if err := sim.Persist(path); err != nil {
		t.Fatal(err)
	}
	return sim, c
}

// of is the notifications of a trade so far.
func (rc *receiver) of(tradeNo string) []gateway.Notification {
	var got []gateway.Notification
	for _, n := range rc.notifications() {
		if n.TradeNo == tradeNo {
			got = append(got, n)
		}
	}
	return got
}

func TestPersistKeepsTradesAcrossARestart(t *testing.T) {
	rc := newReceiver(t)
	path := filepath.Join(t.TempDir(), "gateway.json")
	ctx := context.Background()
	sim, c := persisted(t, rc, path, gatewaysim.Options{})
	trades := []channel.Trade{{TradeNo: "G1-pend", Channel: "alipay", Amount: 100}, {TradeNo: "G2-paid", Channel: "wechat", Amount: 200},
		{TradeNo: "G3-fail", Channel: "unionpay", Amount: 300}, {TradeNo: "G4-gone", Channel: "alipay", Amount: 400}}
	for _, tr := range trades {
		if err := c.CreateTrade(ctx, tr); err != nil {
			t.Fatal(err)
		}
	}
	must(t, sim.Complete("G2-paid", true))
	must(t, sim.Complete("G3-fail", false))
	sim.Forget("G4-gone")
	sim.Wait()
	before := map[string]gatewaysim.Record{}
	queried := map[string]channel.TradeResult{}
	for _, tr := range trades[:3] {
		before[tr.TradeNo], _ = sim.Trade(tr.TradeNo)
		r, err := c.QueryTrade(ctx, tr.TradeNo)
		if err != nil {
			t.Fatal(err)
		}
		queried[tr.TradeNo] = r
	}
	if r := queried["G2-paid"]; r.Outcome != channel.TradeSucceeded || r.Amount != 200 || len(rc.of("G2-paid")) != 1 {
		t.Fatalf("paid before the restart: %+v", r)
	}
	sim.Close()
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("file: %v, %v", fi, err)
	}

	sim, c = persisted(t, rc, path, gatewaysim.Options{})
	for no, b := range before {
		rec, ok := sim.Trade(no)
		if !ok || rec.Trade != b.Trade || rec.NotifyURL != b.NotifyURL || rec.Status != b.Status || rec.ProviderTxn != b.ProviderTxn {
			t.Errorf("%s after the restart: %+v, %v; before %+v", no, rec, ok, b)
		}
		if r, err := c.QueryTrade(ctx, no); err != nil || r != queried[no] {
			t.Errorf("%s queried after the restart: %+v, %v; before %+v", no, r, err, queried[no])
		}
	}
	if _, err := c.QueryTrade(ctx, "G4-gone"); !errors.Is(err, channel.ErrTradeUnknown) {
		t.Fatalf("query of a forgotten trade after the restart = %v", err)
	}
	// The paid trade is notified again as it was, and the pending one ends
	// under a transaction of its own.
	must(t, sim.Complete("G2-paid", false))
	must(t, sim.Complete("G1-pend", true))
	sim.Wait()
	if got := rc.of("G2-paid"); len(got) != 2 || got[1] != got[0] {
		t.Fatalf("notifications of G2-paid: %+v", got)
	}
	if got := rc.of("G1-pend"); len(got) != 1 || got[0].Result != "success" || got[0].ProviderTxn == before["G2-paid"].ProviderTxn {
		t.Fatalf("notifications of G1-pend: %+v (G2's transaction %s)", got, before["G2-paid"].ProviderTxn)
	}
	if err := c.CreateTrade(ctx, trades[0]); err != nil {
		t.Fatalf("the same trade again after the restart: %v", err)
	}
}

// Trades still pending when the gateway restarts are ended by AutoComplete
// as new ones are; those ended before are left as they are.
func TestAutoCompleteEndsLoadedTrades(t *testing.T) {
	rc := newReceiver(t)
	path := filepath.Join(t.TempDir(), "gateway.json")
	ctx := context.Background()
	sim, c := persisted(t, rc, path, gatewaysim.Options{})
	for _, tr := range []channel.Trade{{TradeNo: "H1-pend", Channel: "alipay", Amount: 100}, {TradeNo: "H2-fail", Channel: "wechat", Amount: 200}} {
		if err := c.CreateTrade(ctx, tr); err != nil {
			t.Fatal(err)
		}
	}
	must(t, sim.Complete("H2-fail", false))
	sim.Wait()
	sim.Close()

	sim, c = persisted(t, rc, path, gatewaysim.Options{AutoComplete: 10 * time.Millisecond})
	if err := c.CreateTrade(ctx, channel.Trade{TradeNo: "H3-new", Channel: "unionpay", Amount: 300}); err != nil {
		t.Fatal(err)
	}
	sim.Wait()
	for no, fen := range map[string]int64{"H1-pend": 100, "H3-new": 300} {
		got := rc.of(no)
		if len(got) != 1 || got[0].Result != "success" || got[0].Amount != money.Format(fen) {
			t.Errorf("notifications of %s: %+v", no, got)
		}
		if r, err := c.QueryTrade(ctx, no); err != nil || r.Outcome != channel.TradeSucceeded || r.Amount != fen {
			t.Errorf("query of %s: %+v, %v", no, r, err)
		}
	}
	if got := rc.of("H2-fail"); len(got) != 1 || got[0].Result != "failed" {
		t.Fatalf("notifications of H2-fail: %+v", got)
	}
}

// Close ends the waits of AutoComplete at once, loaded trades' included.
func TestCloseEndsAutoComplete(t *testing.T) {
	rc := newReceiver(t)
	path := filepath.Join(t.TempDir(), "gateway.json")
	ctx := context.Background()
	sim, c := persisted(t, rc, path, gatewaysim.Options{AutoComplete: time.Hour})
	if err := c.CreateTrade(ctx, channel.Trade{TradeNo: "C1-pend", Channel: "alipay", Amount: 100}); err != nil {
		t.Fatal(err)
	}
	sim.Close()
	sim, _ = persisted(t, rc, path, gatewaysim.Options{AutoComplete: time.Hour})
	sim.Close()
	if rec, _ := sim.Trade("C1-pend"); rec.Status != gateway.StatusPending || len(rc.notifications()) != 0 {
		t.Fatalf("C1-pend %+v, %d notifications", rec, len(rc.notifications()))
	}
}

func TestPersistRefusesACorruptFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gateway.json")
	if err := os.WriteFile(path, []byte(`{"Trades":[`), 0o600); err != nil {
		t.Fatal(err)
	}
	sim := gatewaysim.New(secret, gatewaysim.Options{})
	defer sim.Close()
	if err := sim.Persist(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("Persist of a corrupt file = %v; want an error naming it", err)
	}
}

// must fails the test on err: a create or completion the test builds on.
func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
