package simchannel_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/engine/enginetest"
	"github.com/grab-engine/grab/engine/gateway"
	"github.com/grab-engine/grab/engine/simchannel"
)

// grabd is a notify endpoint that verifies each channel's notifications the
// way grabd does and answers them the channel's way.
type grabd struct {
	mu       sync.Mutex
	verify   map[string]func(r *http.Request, body []byte) (engine.Notification, error)
	ack      map[string]func(w http.ResponseWriter)
	received map[string]engine.Notification
}

func (g *grabd) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	channel := strings.TrimPrefix(r.URL.Path, gateway.NotifyPath)
	body, _ := io.ReadAll(r.Body)
	g.mu.Lock()
	defer g.mu.Unlock()
	n, err := g.verify[channel](r, body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	g.received[channel] = n
	g.ack[channel](w)
}

func (g *grabd) got(channel string) (engine.Notification, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	n, ok := g.received[channel]
	return n, ok
}

// Each simulated channel, with its payer, takes a trade through its client,
// pays it by itself, notifies in its own verifiable format, and answers the
// client's query with the outcome; its trades are kept in the directory.
func TestEachChannelPaysAndNotifiesByItself(t *testing.T) {
	g := &grabd{verify: map[string]func(*http.Request, []byte) (engine.Notification, error){},
		ack: map[string]func(http.ResponseWriter){}, received: map[string]engine.Notification{}}
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	o := simchannel.Options{NotifyBase: srv.URL, Dir: dir, PayAfter: 10 * time.Millisecond, Timeout: 5 * time.Second}
	secret := []byte("gateway-secret")

	a, err := simchannel.StartAlipay(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	w, err := simchannel.StartWechat(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	gw, err := simchannel.StartGateway(o, secret)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gw.Close)

	g.mu.Lock()
	g.verify[engine.ChannelAlipay] = func(_ *http.Request, body []byte) (engine.Notification, error) {
		form, err := url.ParseQuery(string(body))
		if err != nil {
			return engine.Notification{}, err
		}
		return a.VerifyNotification(form)
	}
	g.ack[engine.ChannelAlipay] = func(w http.ResponseWriter) { io.WriteString(w, "success") }
	g.verify[engine.ChannelWechat] = func(r *http.Request, body []byte) (engine.Notification, error) {
		return w.VerifyNotification(r.Header, body, time.Now())
	}
	g.ack[engine.ChannelWechat] = func(w http.ResponseWriter) { w.WriteHeader(http.StatusNoContent) }
	g.verify[engine.ChannelUnionpay] = func(r *http.Request, body []byte) (engine.Notification, error) {
		if !gateway.Verify(secret, body, r.Header.Get(gateway.HeaderSignature)) {
			return engine.Notification{}, io.ErrUnexpectedEOF
		}
		return engine.Notification{Channel: engine.ChannelUnionpay, Success: strings.Contains(string(body), `"success"`)}, nil
	}
	g.ack[engine.ChannelUnionpay] = func(w http.ResponseWriter) { w.WriteHeader(http.StatusOK) }
	g.mu.Unlock()

	ctx := context.Background()
	providers := map[string]engine.Provider{engine.ChannelAlipay: a, engine.ChannelWechat: w.Client, engine.ChannelUnionpay: gw.Client}
	for channel, p := range providers {
		tr := engine.Trade{TradeNo: "T1_" + channel, Channel: channel, Amount: 1234}
		if app, ok := p.(engine.AppPayer); ok {
			params, err := app.StartTrade(ctx, tr)
			if err != nil || len(params) == 0 {
				t.Fatalf("%s: pay params %v, %v", channel, params, err)
			}
		} else if err := p.CreateTrade(ctx, tr); err != nil {
			t.Fatalf("%s: %v", channel, err)
		}
	}
	for channel, p := range providers {
		enginetest.WaitFor(t, channel+" notified", func() bool { _, ok := g.got(channel); return ok })
		if n, _ := g.got(channel); !n.Success || (channel != engine.ChannelUnionpay && (n.TradeNo != "T1_"+channel || n.Amount != 1234)) {
			t.Fatalf("%s notified %+v", channel, n)
		}
		r, err := p.QueryTrade(ctx, "T1_"+channel)
		if err != nil || r.Outcome != engine.TradeSucceeded || r.Amount != 1234 {
			t.Fatalf("%s query: %+v, %v", channel, r, err)
		}
	}
	for _, file := range []string{simchannel.AlipayFile, simchannel.WechatFile, simchannel.GatewayFile} {
		if data, err := os.ReadFile(filepath.Join(dir, file)); err != nil || !strings.Contains(string(data), "T1_") {
			t.Fatalf("%s keeps %q, %v", file, data, err)
		}
	}
}

// NotifyBase is required.
func TestNotifyBaseRequired(t *testing.T) {
	if _, err := simchannel.StartAlipay(simchannel.Options{}); err == nil {
		t.Fatal("an Alipay simulator without a notify base started")
	}
}
