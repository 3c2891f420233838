package alipaysim_test

import (
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/grab-engine/grab/engine/alipay"
	"github.com/grab-engine/grab/engine/alipaysim"
)

const appID = "2021000000000001"

var (
	once              sync.Once
	appKey, alipayKey *rsa.PrivateKey
	scale             = 2e-6 // 25 hours in about 0.2s
	scaledTotal       time.Duration
)

// keys makes the app's and Alipay's keys, once for all tests.
func keys() {
	once.Do(func() {
		var err error
		if appKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if alipayKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		for _, d := range alipaysim.Schedule {
			scaledTotal += time.Duration(float64(d) * scale)
		}
	})
}

func setup(t *testing.T, answer func(n int, form url.Values) (int, string)) (*alipaysim.Sim, *int32, chan url.Values) {
	t.Helper()
	keys()
	var posts int32
	forms := make(chan url.Values, 100)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			t.Error(err)
		}
		n := int(atomic.AddInt32(&posts, 1))
		forms <- r.PostForm
		status, body := answer(n, r.PostForm)
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}))
	sim, err := alipaysim.New(alipaysim.Config{AppID: appID, AppPublicKey: &appKey.PublicKey, Key: alipayKey,
		NotifyURL: receiver.URL, Scale: scale})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Stop(); receiver.Close() })
	return sim, &posts, forms
}

func verified(t *testing.T, form url.Values) {
	t.Helper()
	if err := alipay.Verify(&alipayKey.PublicKey, []byte(alipay.SignContent(form, "sign", "sign_type")), form.Get("sign")); err != nil {
		t.Fatalf("notification does not verify: %v", err)
	}
}

// Alipay sends again on its schedule until the receiver answers exactly
// "success", and then never again.
func TestResendStopsAfterSuccess(t *testing.T) {
	sim, posts, forms := setup(t, func(n int, _ url.Values) (int, string) {
		switch n {
		case 1:
			return 500, "oops"
		case 2:
			return 200, "SUCCESS"
		case 3:
			return 200, "success\n"
		}
		return 200, "success"
	})
	if err := sim.Pay("T1-a", "9.99"); err != nil {
		t.Fatal(err)
	}
	sim.Wait()
	time.Sleep(2 * scaledTotal) // nothing more comes
	if got := atomic.LoadInt32(posts); got != 4 {
		t.Fatalf("posts = %d, want 4", got)
	}
	ds := sim.Deliveries()
	if len(ds) != 4 || ds[3].Answer != "success" || ds[3].Attempt != 4 {
		t.Fatalf("deliveries = %+v", ds)
	}
	for i := 1; i < len(ds); i++ {
		want := time.Duration(float64(alipaysim.Schedule[i-1]) * scale)
		if gap := ds[i].At.Sub(ds[i-1].At); gap < want {
			t.Errorf("gap %d = %v, want at least %v", i, gap, want)
		}
	}
	form := <-forms
	verified(t, form)
	for k, want := range map[string]string{"app_id": appID, "out_trade_no": "T1-a", "trade_status": "TRADE_SUCCESS",
		"total_amount": "9.99", "sign_type": "RSA2", "notify_type": "trade_status_sync", "charset": "utf-8"} {
		if form.Get(k) != want {
			t.Errorf("%s = %q, want %q", k, form.Get(k), want)
		}
	}
}

// Unanswered, a notification is sent 8 times (the first and 7 resends) and
// then given up.
func TestResendGivesUpAfterEightSends(t *testing.T) {
	sim, posts, _ := setup(t, func(int, url.Values) (int, string) { return 200, "fail" })
	sim.Create("T2-b", "1.00")
	if err := sim.Close("T2-b"); err != nil {
		t.Fatal(err)
	}
	sim.Wait()
	if got := atomic.LoadInt32(posts); got != 8 {
		t.Fatalf("posts = %d, want 8", got)
	}
	ds := sim.Deliveries()
	if first, last := ds[0].At, ds[len(ds)-1].At; last.Sub(first) < scaledTotal {
		t.Fatalf("8 sends over %v, want at least %v", last.Sub(first), scaledTotal)
	}
}

func TestFaults(t *testing.T) {
	sim, posts, forms := setup(t, func(int, url.Values) (int, string) { return 200, "success" })

	// Lose: the first two sends never arrive; the third does.
	sim.SetFaults(alipaysim.Faults{Lose: 2})
	if err := sim.Pay("T3-lost", "1.00"); err != nil {
		t.Fatal(err)
	}
	sim.Wait()
	ds := sim.Deliveries()
	if atomic.LoadInt32(posts) != 1 || len(ds) != 3 || !ds[0].Lost || !ds[1].Lost || ds[2].Lost {
		t.Fatalf("lose: posts %d, deliveries %+v", atomic.LoadInt32(posts), ds)
	}
	verified(t, <-forms)

	// Duplicate: the same notification twice.
	sim.SetFaults(alipaysim.Faults{Duplicate: true})
	if err := sim.Pay("T4-dup", "1.00"); err != nil {
		t.Fatal(err)
	}
	sim.Wait()
	a, b := <-forms, <-forms
	if atomic.LoadInt32(posts) != 3 || a.Encode() != b.Encode() {
		t.Fatalf("duplicate: posts %d, %v vs %v", atomic.LoadInt32(posts), a, b)
	}

	// Tamper and WrongKey: what arrives does not verify.
	for name, f := range map[string]alipaysim.Faults{"tamper": {Tamper: true}, "wrong key": {WrongKey: true}} {
		sim.SetFaults(f)
		no := "T5-" + name[:3]
		if err := sim.Pay(no, "1.00"); err != nil {
			t.Fatal(err)
		}
		sim.Wait()
		form := <-forms
		err := alipay.Verify(&alipayKey.PublicKey, []byte(alipay.SignContent(form, "sign", "sign_type")), form.Get("sign"))
		if !errors.Is(err, alipay.ErrBadSignature) {
			t.Fatalf("%s: verify = %v", name, err)
		}
	}
}

func TestTradeStates(t *testing.T) {
	sim, _, _ := setup(t, func(int, url.Values) (int, string) { return 200, "success" })
	if err := sim.Close("T-none"); err == nil {
		t.Fatal("closed a trade that does not exist")
	}
	if err := sim.Pay("T6", "2.00"); err != nil {
		t.Fatal(err)
	}
	if err := sim.Close("T6"); err == nil {
		t.Fatal("closed a paid trade")
	}
	if err := sim.Pay("T6", "2.00"); err == nil {
		t.Fatal("paid twice")
	}
	if err := sim.Finish("T6"); err != nil || sim.Status("T6") != "TRADE_FINISHED" {
		t.Fatalf("finish: %v, %s", err, sim.Status("T6"))
	}
	sim.Create("T7", "3.00")
	if err := sim.Pay("T7", "3.01"); err == nil {
		t.Fatal("paid another amount")
	}
	sim.Wait()
}
