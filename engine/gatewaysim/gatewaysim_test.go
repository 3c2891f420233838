package gatewaysim_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/grab-engine/grab/engine"
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
	trade := engine.Trade{TradeNo: "T7-0a1b", Channel: engine.ChannelUnionpay, Amount: 1234}
	for range 2 { // the same trade again creates nothing
		if err := c.CreateTrade(ctx, trade); err != nil {
			t.Fatal(err)
		}
	}
	rec, ok := sim.Trade(trade.TradeNo)
	if !ok || rec.Trade != trade || rec.Creates != 2 || rec.Status != "pending" || rec.NotifyURL != rc.url+"/v1/payments/notify/unionpay" {
		t.Fatalf("gateway holds %+v, %v", rec, ok)
	}
	if err := c.CreateTrade(ctx, engine.Trade{TradeNo: trade.TradeNo, Channel: engine.ChannelUnionpay, Amount: 1}); err == nil {
		t.Fatal("the same number for another amount was accepted")
	}
	if r, err := c.QueryTrade(ctx, trade.TradeNo); err != nil || r != (engine.TradeResult{Outcome: engine.TradePending, Amount: 1234}) {
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
	if err != nil || r != (engine.TradeResult{Outcome: engine.TradeSucceeded, Amount: 1234, ProviderTxn: got[0].ProviderTxn}) {
		t.Fatalf("query = %+v, %v", r, err)
	}
	// A later failure does not move a success; it is notified as it stands.
	sim.Complete(trade.TradeNo, false)
	sim.Wait()
	if got := rc.notifications(); len(got) != 2 || got[1] != got[0] {
		t.Fatalf("notifications = %+v", got)
	}
	sim.Forget(trade.TradeNo)
	if _, err := c.QueryTrade(ctx, trade.TradeNo); !errors.Is(err, engine.ErrTradeUnknown) {
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
	if err := wrong.CreateTrade(ctx, engine.Trade{TradeNo: "T1-aa", Channel: "alipay", Amount: 100}); err == nil {
		t.Fatal("a badly signed create was accepted")
	}
	if _, err := wrong.QueryTrade(ctx, "T1-aa"); err == nil || errors.Is(err, engine.ErrTradeUnknown) {
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
	if err := c.CreateTrade(context.Background(), engine.Trade{TradeNo: "T2-bb", Channel: "wechat", Amount: 500}); err != nil {
		t.Fatal(err)
	}
	sim.Complete("T2-bb", false)
	sim.Wait()
	rec, _ := sim.Trade("T2-bb")
	if got := rc.notifications(); len(got) != 4 || got[3].Result != "failed" || rec.Sends != 4 || rec.Acked != 1 || sim.GaveUp() != 0 {
		t.Fatalf("%d notifications, record %+v, gave up %d", len(got), rec, sim.GaveUp())
	}
}

func TestGivesUpAfterTheSchedule(t *testing.T) {
	rc := newReceiver(t)
	sim, c, _ := start(t, rc, gatewaysim.Options{Faults: gatewaysim.Faults{WrongKey: true}})
	if err := c.CreateTrade(context.Background(), engine.Trade{TradeNo: "T3-cc", Channel: "alipay", Amount: 500}); err != nil {
		t.Fatal(err)
	}
	sim.Complete("T3-cc", true)
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
		c.CreateTrade(ctx, engine.Trade{TradeNo: "T4-a", Channel: "alipay", Amount: 100})
		sim.Complete("T4-a", true)
		sim.Wait()
		if r, err := c.QueryTrade(ctx, "T4-a"); len(rc.notifications()) != 0 || err != nil || r.Outcome != engine.TradeSucceeded {
			t.Fatalf("%d notifications; query %+v, %v", len(rc.notifications()), r, err)
		}
	})
	t.Run("duplicate", func(t *testing.T) {
		rc := newReceiver(t)
		sim, c, _ := start(t, rc, gatewaysim.Options{Faults: gatewaysim.Faults{DuplicateRate: 1}})
		c.CreateTrade(ctx, engine.Trade{TradeNo: "T4-b", Channel: "alipay", Amount: 100})
		sim.Complete("T4-b", true)
		sim.Wait()
		if got := rc.notifications(); len(got) != 2 || got[0] != got[1] {
			t.Fatalf("notifications %+v", got)
		}
	})
	t.Run("delay", func(t *testing.T) {
		rc := newReceiver(t)
		sim, c, _ := start(t, rc, gatewaysim.Options{Faults: gatewaysim.Faults{Delay: 50 * time.Millisecond}, Seed: 3})
		for _, no := range []string{"T4-c", "T4-d", "T4-e"} {
			c.CreateTrade(ctx, engine.Trade{TradeNo: no, Channel: "wechat", Amount: 100})
			sim.Complete(no, true)
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
			c.CreateTrade(ctx, engine.Trade{TradeNo: no, Channel: "wechat", Amount: 100})
			sim.Complete(no, i%2 == 0)
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
		c.CreateTrade(ctx, engine.Trade{TradeNo: "T6-a", Channel: "alipay", Amount: 100})
		deadline := time.Now().Add(5 * time.Second)
		for len(rc.notifications()) == 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if got := rc.notifications(); len(got) != 1 || got[0].Result != "failed" {
			t.Fatalf("notifications %+v", got)
		}
	})
	t.Run("errors", func(t *testing.T) {
		rc := newReceiver(t)
		sim, c, _ := start(t, rc, gatewaysim.Options{Faults: gatewaysim.Faults{ErrorRate: 1}})
		if err := c.CreateTrade(ctx, engine.Trade{TradeNo: "T6-b", Channel: "alipay", Amount: 100}); err == nil {
			t.Fatal("create through a failing gateway succeeded")
		}
		if _, err := c.QueryTrade(ctx, "T6-b"); err == nil || errors.Is(err, engine.ErrTradeUnknown) {
			t.Fatalf("query through a failing gateway = %v; want an ordinary error", err)
		}
		sim.SetFaults(gatewaysim.Faults{})
		if err := c.CreateTrade(ctx, engine.Trade{TradeNo: "T6-b", Channel: "alipay", Amount: 100}); err != nil {
			t.Fatal(err)
		}
	})
}
