package gateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/grab-engine/grab/engine/channel"
	"github.com/grab-engine/grab/engine/gateway"
)

var secret = []byte("gateway-test-secret")

// gatewayAt serves h under /api and returns a client of it.
func gatewayAt(t *testing.T, h http.HandlerFunc, timeout time.Duration) *gateway.Client {
	t.Helper()
	srv := httptest.NewServer(http.StripPrefix("/api", h))
	t.Cleanup(srv.Close)
	c, err := gateway.New(gateway.Config{BaseURL: srv.URL + "/api/", Secret: secret, NotifyBase: "https://grab.example.com/",
		Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func reply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func TestCreateTradeSendsASignedRequest(t *testing.T) {
	var got gateway.CreateRequest
	c := gatewayAt(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.URL.Path != "/trades" || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("request %s %s %q", r.Method, r.URL.Path, r.Header.Get("Content-Type"))
		}
		if sig := r.Header.Get("X-Grab-Signature"); sig != gateway.Sign(secret, body) || sig != strings.ToLower(sig) {
			t.Errorf("signature %q is not the body's", sig)
		}
		if err := json.Unmarshal(body, &got); err != nil {
			t.Error(err)
		}
		reply(w, 200, gateway.TradeReply{TradeNo: got.TradeNo, Status: "pending", Amount: got.Amount})
	}, 0)
	if err := c.CreateTrade(context.Background(), channel.Trade{TradeNo: "T1-abc", Channel: "wechat", Amount: 2000}); err != nil {
		t.Fatal(err)
	}
	want := gateway.CreateRequest{TradeNo: "T1-abc", Channel: "wechat", Amount: "20.00",
		NotifyURL: "https://grab.example.com/v1/payments/notify/wechat"}
	if got != want {
		t.Fatalf("request = %+v, want %+v", got, want)
	}
}

func TestCreateTradeRefusesOddAnswers(t *testing.T) {
	trade := channel.Trade{TradeNo: "T1-abc", Channel: "alipay", Amount: 2000}
	for _, c := range []struct {
		name   string
		status int
		body   any
		want   string
	}{
		{"another amount", 200, gateway.TradeReply{TradeNo: "T1-abc", Status: "pending", Amount: "2.00"}, "holds it for 2.00"},
		{"another trade", 200, gateway.TradeReply{TradeNo: "T2-abc", Status: "pending", Amount: "20.00"}, "about trade"},
		{"bad status", 200, gateway.TradeReply{TradeNo: "T1-abc", Status: "paid", Amount: "20.00"}, "unexpected answer 200"},
		{"not json", 200, "<html>", "unexpected answer 200"},
		{"conflict", 409, gateway.ErrorReply{Error: "conflict"}, "unexpected answer 409"},
		{"refused signature", 401, gateway.ErrorReply{Error: "unauthorized"}, "unexpected answer 401"},
		{"failure", 503, gateway.ErrorReply{Error: "unavailable"}, "unexpected answer 503"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cl := gatewayAt(t, func(w http.ResponseWriter, r *http.Request) { reply(w, c.status, c.body) }, 0)
			err := cl.CreateTrade(context.Background(), trade)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want %q", err, c.want)
			}
			if strings.Contains(err.Error(), string(secret)) {
				t.Fatalf("the error names the secret: %v", err)
			}
		})
	}
}

func TestQueryTrade(t *testing.T) {
	for _, c := range []struct {
		name    string
		status  int
		body    any
		want    channel.TradeResult
		unknown bool
		err     string
	}{
		{"pending", 200, gateway.TradeReply{TradeNo: "T1-abc", Status: "pending", Amount: "20.00"}, channel.TradeResult{Outcome: channel.TradePending, Amount: 2000}, false, ""},
		{"success", 200, gateway.TradeReply{TradeNo: "T1-abc", Status: "success", Amount: "20.00", ProviderTxn: "tx9"},
			channel.TradeResult{Outcome: channel.TradeSucceeded, Amount: 2000, ProviderTxn: "tx9"}, false, ""},
		{"failed", 200, gateway.TradeReply{TradeNo: "T1-abc", Status: "failed", Amount: "20.00"}, channel.TradeResult{Outcome: channel.TradeFailed, Amount: 2000}, false, ""},
		{"another amount is reported as it is", 200, gateway.TradeReply{TradeNo: "T1-abc", Status: "success", Amount: "0.20"},
			channel.TradeResult{Outcome: channel.TradeSucceeded, Amount: 20}, false, ""},
		{"another trade", 200, gateway.TradeReply{TradeNo: "T1-abd", Status: "success", Amount: "20.00"}, channel.TradeResult{}, false, "about trade"},
		{"bad amount", 200, gateway.TradeReply{TradeNo: "T1-abc", Status: "success", Amount: "twenty"}, channel.TradeResult{}, false, "unexpected answer 200"},
		{"unknown", 404, gateway.ErrorReply{Error: "not_found"}, channel.TradeResult{}, true, "does not know"},
		{"a bare 404 is not the gateway's word", 404, "404 page not found", channel.TradeResult{}, false, "unexpected answer 404"},
		{"failure", 500, gateway.ErrorReply{Error: "unavailable"}, channel.TradeResult{}, false, "unexpected answer 500"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cl := gatewayAt(t, func(w http.ResponseWriter, r *http.Request) {
				if r.Method != http.MethodGet || r.URL.Path != "/trades/T1-abc" {
					t.Errorf("request %s %s", r.Method, r.URL.Path)
				}
				if sig := r.Header.Get("X-Grab-Signature"); sig != gateway.Sign(secret, []byte("/trades/T1-abc")) {
					t.Errorf("signature %q is not the path's", sig)
				}
				reply(w, c.status, c.body)
			}, 0)
			got, err := cl.QueryTrade(context.Background(), "T1-abc")
			if errors.Is(err, channel.ErrTradeUnknown) != c.unknown {
				t.Fatalf("err = %v, unknown %v", err, c.unknown)
			}
			if c.err == "" && (err != nil || got != c.want) || c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)) {
				t.Fatalf("query = %+v, %v; want %+v, %q", got, err, c.want, c.err)
			}
		})
	}
}

func TestCallsAreBounded(t *testing.T) {
	release := make(chan struct{})
	c := gatewayAt(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}, 100*time.Millisecond)
	defer close(release)
	start := time.Now()
	_, err := c.QueryTrade(context.Background(), "T1-abc")
	if err == nil || errors.Is(err, channel.ErrTradeUnknown) || time.Since(start) > 5*time.Second {
		t.Fatalf("query of a hung gateway = %v after %v; want an ordinary error within the timeout", err, time.Since(start))
	}
	if err := c.CreateTrade(context.Background(), channel.Trade{TradeNo: "T1-abc", Channel: "alipay", Amount: 1}); err == nil {
		t.Fatal("create at a hung gateway succeeded")
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	for _, cfg := range []gateway.Config{
		{BaseURL: "pay.internal", Secret: secret, NotifyBase: "https://grab"},
		{BaseURL: "https://pay.internal", Secret: secret, NotifyBase: ""},
		{BaseURL: "https://pay.internal", NotifyBase: "https://grab"},
	} {
		if _, err := gateway.New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
	if _, err := gateway.New(gateway.Config{BaseURL: "https://pay.internal", Secret: secret, NotifyBase: "https://grab"}); err != nil {
		t.Fatal(err)
	}
}

func TestQueryRefusesABadTradeNumber(t *testing.T) {
	c := gatewayAt(t, func(w http.ResponseWriter, r *http.Request) { t.Error("a request was sent") }, 0)
	if _, err := c.QueryTrade(context.Background(), "../admin"); err == nil || errors.Is(err, channel.ErrTradeUnknown) {
		t.Fatalf("err = %v", err)
	}
}

// A Config printed (a log line, %v, %#v) shows no secret.
func TestConfigPrintsNoSecret(t *testing.T) {
	cfg := gateway.Config{BaseURL: "https://pay.internal", Secret: []byte("s3cr3t-s3cr3t"), NotifyBase: "https://grab.example.com"}
	for _, s := range []string{fmt.Sprint(cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg)} {
		if strings.Contains(s, "s3cr3t") || !strings.Contains(s, "pay.internal") {
			t.Fatalf("Config prints %s", s)
		}
	}
}
