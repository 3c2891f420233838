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

	"github.com/grab-engine/grab/engine/channel"
	"github.com/grab-engine/grab/engine/enginetest"
	"github.com/grab-engine/grab/engine/gateway"
	"github.com/grab-engine/grab/engine/simchannel"
)

// grabd is a notify endpoint that verifies each channel's notifications the
// way grabd does and answers them the channel's way.
type grabd struct {
	mu       sync.Mutex
	verify   map[string]func(r *http.Request, body []byte) (channel.Notification, error)
	ack      map[string]func(w http.ResponseWriter)
	received map[string]channel.Notification
}

func (g *grabd) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ch := strings.TrimPrefix(r.URL.Path, gateway.NotifyPath)
	body, _ := io.ReadAll(r.Body)
	g.mu.Lock()
	defer g.mu.Unlock()
	n, err := g.verify[ch](r, body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	g.received[ch] = n
	g.ack[ch](w)
}

func (g *grabd) got(ch string) (channel.Notification, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	n, ok := g.received[ch]
	return n, ok
}

// Each simulated channel, with its payer, takes a trade through its client,
// pays it by itself, notifies in its own verifiable format, and answers the
// client's query with the outcome; its trades are kept in the directory.
func TestEachChannelPaysAndNotifiesByItself(t *testing.T) {
	g := &grabd{verify: map[string]func(*http.Request, []byte) (channel.Notification, error){},
		ack: map[string]func(http.ResponseWriter){}, received: map[string]channel.Notification{}}
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
	g.verify[channel.Alipay] = func(_ *http.Request, body []byte) (channel.Notification, error) {
		form, err := url.ParseQuery(string(body))
		if err != nil {
			return channel.Notification{}, err
		}
		return a.VerifyNotification(form)
	}
	g.ack[channel.Alipay] = func(w http.ResponseWriter) { io.WriteString(w, "success") }
	g.verify[channel.Wechat] = func(r *http.Request, body []byte) (channel.Notification, error) {
		return w.VerifyNotification(r.Header, body, time.Now())
	}
	g.ack[channel.Wechat] = func(w http.ResponseWriter) { w.WriteHeader(http.StatusNoContent) }
	g.verify[channel.Unionpay] = func(r *http.Request, body []byte) (channel.Notification, error) {
		if !gateway.Verify(secret, body, r.Header.Get(gateway.HeaderSignature)) {
			return channel.Notification{}, io.ErrUnexpectedEOF
		}
		return channel.Notification{Channel: channel.Unionpay, Success: strings.Contains(string(body), `"success"`)}, nil
	}
	g.ack[channel.Unionpay] = func(w http.ResponseWriter) { w.WriteHeader(http.StatusOK) }
	g.mu.Unlock()

	ctx := context.Background()
	providers := map[string]channel.Provider{channel.Alipay: a, channel.Wechat: w.Client, channel.Unionpay: gw.Client}
	for ch, p := range providers {
		tr := channel.Trade{TradeNo: "T1_" + ch, Channel: ch, Amount: 1234}
		if app, ok := p.(channel.AppPayer); ok {
			params, err := app.StartTrade(ctx, tr)
			if err != nil || len(params) == 0 {
				t.Fatalf("%s: pay params %v, %v", ch, params, err)
			}
		} else if err := p.CreateTrade(ctx, tr); err != nil {
			t.Fatalf("%s: %v", ch, err)
		}
	}
	for ch, p := range providers {
		enginetest.WaitFor(t, ch+" notified", func() bool { _, ok := g.got(ch); return ok })
		if n, _ := g.got(ch); !n.Success || (ch != channel.Unionpay && (n.TradeNo != "T1_"+ch || n.Amount != 1234)) {
			t.Fatalf("%s notified %+v", ch, n)
		}
		r, err := p.QueryTrade(ctx, "T1_"+ch)
		if err != nil || r.Outcome != channel.TradeSucceeded || r.Amount != 1234 {
			t.Fatalf("%s query: %+v, %v", ch, r, err)
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
