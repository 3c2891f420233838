package alipaysim_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/grab-engine/grab/engine/alipay"
	"github.com/grab-engine/grab/engine/alipaysim"
	"github.com/grab-engine/grab/engine/channel"
)

// notifyReceiver is the app server's notify URL: it answers "success" and
// hands every form it gets to forms.
func notifyReceiver(t *testing.T) (string, chan url.Values) {
	t.Helper()
	forms := make(chan url.Values, 100)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			t.Error(err)
		}
		forms <- r.PostForm
		_, _ = w.Write([]byte("success"))
	}))
	t.Cleanup(srv.Close)
	return srv.URL, forms
}

// persisted starts a simulator that keeps its trades at path, served on a
// loopback server, and an app client of it notified at notifyURL. stop
// stops both, as a restart does.
func persisted(t *testing.T, path, notifyURL string, payAfter time.Duration) (sim *alipaysim.Sim, c *alipay.Client, stop func()) {
	t.Helper()
	keys()
	sim, err := alipaysim.New(alipaysim.Config{AppID: appID, AppPublicKey: &appKey.PublicKey, Key: alipayKey,
		NotifyURL: notifyURL, Scale: scale})
	if err != nil {
		t.Fatal(err)
	}
	if payAfter > 0 {
		sim.PayAfter(payAfter) // before Persist: the loaded trades are paid all the same
	}
	if err := sim.Persist(path); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sim)
	pub, err := x509.MarshalPKIXPublicKey(&alipayKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err = alipay.New(alipay.Config{AppID: appID,
		PrivateKey:      pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(appKey)}),
		AlipayPublicKey: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}),
		Gateway:         srv.URL, NotifyURL: notifyURL})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			sim.Stop()
			srv.Close()
		}
	}
	t.Cleanup(stop)
	return sim, c, stop
}

// open has the payer's app open an order string for the trade.
func open(t *testing.T, sim *alipaysim.Sim, c *alipay.Client, no string, fen int64) {
	t.Helper()
	s, err := c.AppPayOrderString(channel.Trade{TradeNo: no, Channel: channel.Alipay, Amount: fen})
	if err != nil {
		t.Fatal(err)
	}
	if err := sim.Open(s); err != nil {
		t.Fatal(err)
	}
}

// next is the next notification of the trade, skipping others.
func next(t *testing.T, forms chan url.Values, no string) url.Values {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case f := <-forms:
			if f.Get("out_trade_no") == no {
				verified(t, f)
				return f
			}
		case <-timeout:
			t.Fatalf("no notification of %s", no)
		}
	}
}

func TestPersistKeepsTradesAcrossARestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "alipay.json")
	notifyURL, forms := notifyReceiver(t)
	ctx := context.Background()
	sim, c, stop := persisted(t, path, notifyURL, 0)
	open(t, sim, c, "P1-wait", 123)
	open(t, sim, c, "P2-paid", 456)
	if err := sim.Pay("P2-paid", "4.56"); err != nil {
		t.Fatal(err)
	}
	sim.Create("P3-closed", "7.89")
	if err := sim.Close("P3-closed"); err != nil {
		t.Fatal(err)
	}
	if err := sim.Pay("P4-finished", "1.00"); err != nil {
		t.Fatal(err)
	}
	if err := sim.Finish("P4-finished"); err != nil {
		t.Fatal(err)
	}
	paid := next(t, forms, "P2-paid")
	nos := []string{"P1-wait", "P2-paid", "P3-closed", "P4-finished"}
	before := map[string]channel.TradeResult{}
	statuses := map[string]string{}
	for _, no := range nos {
		r, err := c.QueryTrade(ctx, no)
		if err != nil {
			t.Fatal(err)
		}
		before[no], statuses[no] = r, sim.Status(no)
	}
	sim.Wait()
	stop()
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("file: %v, %v", fi, err)
	}

	sim, c, _ = persisted(t, path, notifyURL, 0)
	for _, no := range nos {
		r, err := c.QueryTrade(ctx, no)
		if err != nil || r != before[no] || sim.Status(no) != statuses[no] {
			t.Errorf("%s after the restart: %+v %s, %v; before %+v %s", no, r, sim.Status(no), err, before[no], statuses[no])
		}
	}
	if statuses["P2-paid"] != "TRADE_SUCCESS" || before["P2-paid"].Outcome != channel.TradeSucceeded || before["P2-paid"].Amount != 456 {
		t.Fatalf("paid before the restart: %s %+v", statuses["P2-paid"], before["P2-paid"])
	}
	// A notification sent again after the restart says what the first said.
	if err := sim.Notify("P2-paid"); err != nil {
		t.Fatal(err)
	}
	again := next(t, forms, "P2-paid")
	for _, k := range []string{"trade_no", "trade_status", "total_amount", "subject", "gmt_create", "gmt_payment"} {
		if again.Get(k) != paid.Get(k) {
			t.Errorf("%s = %q after the restart, %q before", k, again.Get(k), paid.Get(k))
		}
	}
	// The trade still waiting is paid as before, and a new trade gets a
	// trade_no of its own.
	if err := sim.Pay("P1-wait", "1.23"); err != nil {
		t.Fatal(err)
	}
	if f := next(t, forms, "P1-wait"); f.Get("trade_no") != before["P1-wait"].ProviderTxn || f.Get("trade_status") != "TRADE_SUCCESS" {
		t.Fatalf("P1-wait paid after the restart: %v", f)
	}
	open(t, sim, c, "P5-new", 100)
	r, err := c.QueryTrade(ctx, "P5-new")
	if err != nil {
		t.Fatal(err)
	}
	for no, b := range before {
		if b.ProviderTxn == r.ProviderTxn {
			t.Fatalf("new trade_no %s is %s's", r.ProviderTxn, no)
		}
	}
	sim.Wait()
}

func TestPayAfterPaysOpenedTrades(t *testing.T) {
	notifyURL, forms := notifyReceiver(t)
	sim, c, _ := persisted(t, filepath.Join(t.TempDir(), "alipay.json"), notifyURL, 0)
	sim.PayAfter(10 * time.Millisecond)
	open(t, sim, c, "A1-auto", 250)
	sim.Create("A2-manual", "1.00") // made by the test, not opened: left to it
	sim.Wait()
	f := next(t, forms, "A1-auto")
	if f.Get("trade_status") != "TRADE_SUCCESS" || f.Get("total_amount") != "2.50" || sim.Status("A1-auto") != "TRADE_SUCCESS" {
		t.Fatalf("notified %v, status %s", f, sim.Status("A1-auto"))
	}
	r, err := c.QueryTrade(context.Background(), "A1-auto")
	if err != nil || r.Outcome != channel.TradeSucceeded || r.Amount != 250 {
		t.Fatalf("query %+v, %v", r, err)
	}
	if sim.Status("A2-manual") != "WAIT_BUYER_PAY" {
		t.Fatalf("A2-manual is %s", sim.Status("A2-manual"))
	}
}

// A trade opened before a restart is paid by the simulator that loads it.
func TestPayAfterPaysLoadedTrades(t *testing.T) {
	path := filepath.Join(t.TempDir(), "alipay.json")
	notifyURL, forms := notifyReceiver(t)
	sim, c, stop := persisted(t, path, notifyURL, 0)
	open(t, sim, c, "L1-wait", 300)
	sim.Create("L2-closed", "1.00")
	if err := sim.Close("L2-closed"); err != nil {
		t.Fatal(err)
	}
	before, err := c.QueryTrade(context.Background(), "L1-wait")
	if err != nil {
		t.Fatal(err)
	}
	sim.Wait()
	stop()

	sim, c, _ = persisted(t, path, notifyURL, 10*time.Millisecond)
	sim.Wait()
	f := next(t, forms, "L1-wait")
	if f.Get("trade_status") != "TRADE_SUCCESS" || f.Get("trade_no") != before.ProviderTxn || f.Get("total_amount") != "3.00" {
		t.Fatalf("notified %v", f)
	}
	if r, err := c.QueryTrade(context.Background(), "L1-wait"); err != nil || r.Outcome != channel.TradeSucceeded {
		t.Fatalf("query %+v, %v", r, err)
	}
	if sim.Status("L2-closed") != "TRADE_CLOSED" {
		t.Fatalf("L2-closed is %s", sim.Status("L2-closed"))
	}
}

// Stop ends the waits of PayAfter at once: nothing is paid after it.
func TestStopEndsPayAfter(t *testing.T) {
	notifyURL, _ := notifyReceiver(t)
	sim, c, stop := persisted(t, filepath.Join(t.TempDir(), "alipay.json"), notifyURL, time.Hour)
	open(t, sim, c, "S1-wait", 100)
	stop()
	if sim.Status("S1-wait") != "WAIT_BUYER_PAY" {
		t.Fatalf("S1-wait is %s", sim.Status("S1-wait"))
	}
}

func TestPersistRefusesACorruptFile(t *testing.T) {
	keys()
	path := filepath.Join(t.TempDir(), "alipay.json")
	if err := os.WriteFile(path, []byte(`{"Trades":[`), 0o600); err != nil {
		t.Fatal(err)
	}
	sim, err := alipaysim.New(alipaysim.Config{AppID: appID, AppPublicKey: &appKey.PublicKey, Key: alipayKey})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Stop()
	if err := sim.Persist(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("Persist of a corrupt file = %v; want an error naming it", err)
	}
}
