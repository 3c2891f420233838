package wechatpaysim_test

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/grab-engine/grab/engine/wechatpaysim"
)

// place places an APP order and returns its prepay_id.
func (e *env) place(t *testing.T, no string, total int64) string {
	t.Helper()
	resp, body := e.do(t, http.MethodPost, "/v3/pay/transactions/app", e.order(no, total), e.merchant, time.Now().Unix(), mchSerial)
	var r struct {
		PrepayID string `json:"prepay_id"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &r) != nil || r.PrepayID == "" {
		t.Fatalf("order %s: %d %s", no, resp.StatusCode, body)
	}
	return r.PrepayID
}

// query queries an order by out_trade_no.
func (e *env) query(t *testing.T, no string) transaction {
	t.Helper()
	resp, body := e.do(t, http.MethodGet, "/v3/pay/transactions/out-trade-no/"+no+"?mchid="+mchID, nil, e.merchant, time.Now().Unix(), mchSerial)
	e.verifyAnswer(t, resp, body)
	var tr transaction
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &tr) != nil {
		t.Fatalf("query %s: %d %s", no, resp.StatusCode, body)
	}
	return tr
}

// restart shuts the simulator down and serves, in its place, a new one on
// the file at path that pays by itself after payAfter (when positive).
func (e *env) restart(t *testing.T, path string, payAfter time.Duration) {
	t.Helper()
	e.sim.Shutdown()
	sim := e.newSim(t)
	if err := sim.Persist(path); err != nil {
		t.Fatal(err)
	}
	if payAfter > 0 {
		sim.PayAfter(payAfter) // after Persist: the loaded orders are paid too
	}
	e.sim = sim
	e.current.Store(sim)
}

func TestPersistKeepsOrdersAcrossARestart(t *testing.T) {
	e := newEnv(t)
	path := filepath.Join(t.TempDir(), "wechatpay.json")
	if err := e.sim.Persist(path); err != nil {
		t.Fatal(err)
	}
	prepay := e.place(t, "W1-notpay", 100)
	e.place(t, "W2-paid", 200)
	if err := e.sim.Pay("W2-paid"); err != nil {
		t.Fatal(err)
	}
	e.place(t, "W3-closed", 300)
	if err := e.sim.Close("W3-closed"); err != nil {
		t.Fatal(err)
	}
	e.sim.Wait()
	nos := []string{"W1-notpay", "W2-paid", "W3-closed"}
	trades := map[string]wechatpaysim.Trade{}
	queried := map[string]transaction{}
	for _, no := range nos {
		trades[no], _ = e.sim.Trade(no)
		queried[no] = e.query(t, no)
	}
	if tr := trades["W2-paid"]; tr.State != "SUCCESS" || tr.TransactionID == "" || tr.Total != 200 || len(e.notifiedOf("W2-paid")) != 1 {
		t.Fatalf("paid before the restart: %+v", tr)
	}

	e.restart(t, path, 0)
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("file: %v, %v", fi, err)
	}
	for _, no := range nos {
		if tr, ok := e.sim.Trade(no); !ok || tr != trades[no] {
			t.Errorf("%s after the restart: %+v, %v; before %+v", no, tr, ok, trades[no])
		}
		if q := e.query(t, no); q != queried[no] {
			t.Errorf("%s queried after the restart: %+v; before %+v", no, q, queried[no])
		}
	}
	// A notification sent again after the restart says what the first said.
	if err := e.sim.Notify("W2-paid"); err != nil {
		t.Fatal(err)
	}
	e.sim.Wait()
	if got := e.notifiedOf("W2-paid"); len(got) != 2 || got[1] != got[0] {
		t.Fatalf("notifications of W2-paid: %+v", got)
	}
	// The unpaid order is placed again as the same and paid, under a
	// transaction id of its own.
	if again := e.place(t, "W1-notpay", 100); again != prepay {
		t.Fatalf("prepay_id %s after the restart, %s before", again, prepay)
	}
	if err := e.sim.Pay("W1-notpay"); err != nil {
		t.Fatal(err)
	}
	e.sim.Wait()
	if got := e.notifiedOf("W1-notpay"); len(got) != 1 || got[0].TradeState != "SUCCESS" || got[0].TransactionID == trades["W2-paid"].TransactionID {
		t.Fatalf("notifications of W1-notpay: %+v (W2's transaction %s)", got, trades["W2-paid"].TransactionID)
	}
}

func TestPayAfterPaysPlacedOrders(t *testing.T) {
	e := newEnv(t)
	e.sim.PayAfter(10 * time.Millisecond)
	e.place(t, "A1-auto", 250)
	e.sim.Wait()
	got := e.notifiedOf("A1-auto")
	if len(got) != 1 || got[0].TradeState != "SUCCESS" || got[0].Amount.Total != 250 || got[0].TransactionID == "" {
		t.Fatalf("notifications %+v", got)
	}
	if q := e.query(t, "A1-auto"); q.TradeState != "SUCCESS" || q.TransactionID != got[0].TransactionID {
		t.Fatalf("query %+v", q)
	}
}

// An order placed before a restart is paid by the simulator that loads it;
// one closed is not.
func TestPayAfterPaysLoadedOrders(t *testing.T) {
	e := newEnv(t)
	path := filepath.Join(t.TempDir(), "wechatpay.json")
	if err := e.sim.Persist(path); err != nil {
		t.Fatal(err)
	}
	prepay := e.place(t, "L1-notpay", 300)
	e.place(t, "L2-closed", 100)
	if err := e.sim.Close("L2-closed"); err != nil {
		t.Fatal(err)
	}

	e.restart(t, path, 10*time.Millisecond)
	e.sim.Wait()
	got := e.notifiedOf("L1-notpay")
	if len(got) != 1 || got[0].TradeState != "SUCCESS" || got[0].Amount.Total != 300 {
		t.Fatalf("notifications %+v", got)
	}
	if tr, _ := e.sim.Trade("L1-notpay"); tr.State != "SUCCESS" || tr.PrepayID != prepay {
		t.Fatalf("L1-notpay %+v", tr)
	}
	if q := e.query(t, "L2-closed"); q.TradeState != "CLOSED" || len(e.notifiedOf("L2-closed")) != 0 {
		t.Fatalf("L2-closed %+v", q)
	}
}

// Shutdown ends the waits of PayAfter at once: nothing is paid after it.
func TestShutdownEndsPayAfter(t *testing.T) {
	e := newEnv(t)
	e.sim.PayAfter(time.Hour)
	e.place(t, "S1-notpay", 100)
	e.sim.Shutdown()
	if tr, _ := e.sim.Trade("S1-notpay"); tr.State != "NOTPAY" {
		t.Fatalf("S1-notpay %+v", tr)
	}
}

func TestPersistRefusesACorruptFile(t *testing.T) {
	e := newEnv(t)
	path := filepath.Join(t.TempDir(), "wechatpay.json")
	if err := os.WriteFile(path, []byte(`{"Trades":[`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.newSim(t).Persist(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("Persist of a corrupt file = %v; want an error naming it", err)
	}
}
