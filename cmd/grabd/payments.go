package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	nethttp "net/http"
	"path/filepath"
	"time"

	"github.com/grab-engine/grab/engine/alipay"
	"github.com/grab-engine/grab/engine/channel"
	"github.com/grab-engine/grab/engine/gateway"
	"github.com/grab-engine/grab/engine/paysim"
	"github.com/grab-engine/grab/engine/wechatpay"
	grabhttp "github.com/grab-engine/grab/http"
)

// payments is what grabd takes third-party payments with.
type payments struct {
	// shared serves every channel without a provider of its own (sim or gateway).
	shared channel.Provider
	// natives are the native channels' own providers and notification readers.
	natives   map[string]channel.Provider
	notifiers map[string]grabhttp.Notifier
	stops     []func() // the embedded simulators, stopped in reverse order
}

func (p *payments) stop() {
	for i := len(p.stops) - 1; i >= 0; i-- {
		p.stops[i]()
	}
}

// startPayments makes the providers GRAB_PAY_PROVIDER names. self is grabd's
// own base URL, where the embedded simulators notify. On an error, what was
// started is stopped.
func startPayments(ctx context.Context, cfg Config, self string, log *slog.Logger) (p *payments, err error) {
	p = &payments{natives: map[string]channel.Provider{}, notifiers: map[string]grabhttp.Notifier{}}
	defer func() {
		if err != nil {
			p.stop()
		}
	}()
	delay := cfg.payerDelay
	if delay <= 0 {
		delay = time.Second
	}
	if cfg.Pays(providerAlipay) {
		a := cfg.Alipay
		if err := p.startNative(channel.Alipay, "Alipay", a.Simulated, func() (channel.Provider, grabhttp.Notifier, error) {
			return p.startAlipaySim(cfg, self, delay)
		}, a.channel, delay, log, "app_id", a.AppID, "gateway", a.Gateway, "notify_url", a.NotifyURL); err != nil {
			return nil, err
		}
	}
	if cfg.Pays(providerWechat) {
		w := cfg.Wechat
		if err := p.startNative(channel.Wechat, "WeChat Pay", w.Simulated, func() (channel.Provider, grabhttp.Notifier, error) {
			return p.startWechatSim(cfg, self, delay)
		}, w.channel, delay, log, "mchid", w.MchID, "appid", w.AppID, "serial", w.Serial, "public_key_id", w.PublicKeyID,
			"base_url", w.BaseURL, "notify_url", w.NotifyURL); err != nil {
			return nil, err
		}
	}
	switch {
	case cfg.Pays(providerSim):
		sim := paysim.New([]byte(cfg.PaySecret), postNotification(self), paysim.Faults{})
		if cfg.Embedded() {
			// As a real provider would, the simulator keeps its trades when grabd restarts.
			if err := sim.Persist(filepath.Join(cfg.DataDir, "paysim.json")); err != nil {
				return nil, err
			}
		}
		// Demo payments: every trade succeeds by itself shortly after it is made.
		sim.SettleAfter(ctx, delay)
		p.shared = sim
	case cfg.Pays(providerGateway) && cfg.PayURL == "":
		gw, err := p.startGatewaySim(cfg, self, delay)
		if err != nil {
			return nil, err
		}
		p.shared = gw
	case cfg.Pays(providerGateway):
		// One gateway serves every channel: the channel travels in each trade.
		gw, err := gateway.New(gateway.Config{BaseURL: cfg.PayURL, Secret: []byte(cfg.PaySecret), NotifyBase: cfg.PayNotifyBase})
		if err != nil {
			return nil, err
		}
		p.shared = gw
	}
	for _, ch := range channel.All {
		if p.natives[ch] == nil && p.shared != nil {
			logShared(log, cfg, ch)
		}
	}
	return p, nil
}

// logShared says which shared provider serves a channel.
func logShared(log *slog.Logger, cfg Config, ch string) {
	switch {
	case cfg.Pays(providerSim):
		log.Warn("payment channel: the built-in simulator; every trade succeeds by itself, no money moves", "channel", ch)
	case cfg.PayURL == "":
		log.Warn("payment channel: the company payment gateway's simulator; every trade succeeds by itself, no money moves",
			"channel", ch)
	default:
		log.Info("payment channel: the company payment gateway", "channel", ch, "url", cfg.PayURL,
			"notify_url", cfg.PayNotifyBase+gateway.NotifyPath+ch)
	}
}

// channelFunc makes a native channel: its provider and the reader of its
// notifications.
type channelFunc func() (channel.Provider, grabhttp.Notifier, error)

// startNative makes a native channel (name is the channel's brand): real,
// the client of its settings, logged with attrs (ids and URLs only); or, in
// the embedded mode without settings, sim, its simulator.
func (p *payments) startNative(ch, name string, simulated bool, sim, real channelFunc, delay time.Duration, log *slog.Logger,
	attrs ...any) error {
	start := real
	if simulated {
		start = sim
	}
	provider, notifier, err := start()
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	p.natives[ch] = provider
	p.notifiers[ch] = notifier
	if simulated {
		log.Warn("payment channel: "+name+"'s simulator; payments are simulated, every trade is paid by itself, no money moves",
			"channel", ch, "paid_after", delay.String())
	} else {
		log.Info("payment channel: "+name, append([]any{"channel", ch}, attrs...)...)
	}
	return nil
}

// channel is the client of GRAB_ALIPAY_*.
func (a AlipaySettings) channel() (channel.Provider, grabhttp.Notifier, error) {
	c, err := alipay.New(a.config())
	return c, grabhttp.AlipayNotifier(c), err
}

// channel is the client of GRAB_WECHAT_*.
func (w WechatSettings) channel() (channel.Provider, grabhttp.Notifier, error) {
	c, err := wechatpay.New(w.config())
	return c, grabhttp.WechatNotifier(c, nil), err
}

// postNotification delivers the simulator's notifications to this server's
// own notify endpoint, signed, as a provider's server would.
func postNotification(self string) paysim.Deliver {
	client := &nethttp.Client{Timeout: 5 * time.Second}
	return func(ctx context.Context, ch string, body []byte, signature string) error {
		req, err := nethttp.NewRequestWithContext(ctx, nethttp.MethodPost, self+gateway.NotifyPath+ch, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(gateway.HeaderSignature, signature)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != nethttp.StatusOK {
			return fmt.Errorf("notify answered %s", resp.Status)
		}
		return nil
	}
}
