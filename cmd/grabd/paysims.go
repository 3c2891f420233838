package main

import (
	"time"

	"github.com/grab-engine/grab/engine/channel"
	"github.com/grab-engine/grab/engine/simchannel"
	grabhttp "github.com/grab-engine/grab/http"
)

// simOptions are the embedded mode's simulated channels: they notify grabd
// at self, keep their trades in the data directory, pay each trade delay
// after it is made, and resend a notification grabd did not take 100 times
// faster than the real channels.
func simOptions(cfg Config, self string, delay time.Duration) simchannel.Options {
	return simchannel.Options{NotifyBase: self, Dir: cfg.DataDir, PayAfter: delay, ResendScale: 0.01,
		Subject: cfg.Alipay.Subject, Description: cfg.Wechat.Description, Timeout: cfg.Alipay.Timeout}
}

// startAlipaySim starts Alipay's simulator and the channel's client of it;
// the demo's payer opens each order string handed out, as the app would.
func (p *payments) startAlipaySim(cfg Config, self string, delay time.Duration) (channel.Provider, grabhttp.Notifier, error) {
	a, err := simchannel.StartAlipay(simOptions(cfg, self, delay))
	if err != nil {
		return nil, nil, err
	}
	p.stops = append(p.stops, a.Close)
	return a, grabhttp.AlipayNotifier(a.Client), nil
}

// startWechatSim starts WeChat Pay's simulator and the channel's client of it.
func (p *payments) startWechatSim(cfg Config, self string, delay time.Duration) (channel.Provider, grabhttp.Notifier, error) {
	o := simOptions(cfg, self, delay)
	o.Timeout = cfg.Wechat.Timeout
	w, err := simchannel.StartWechat(o)
	if err != nil {
		return nil, nil, err
	}
	p.stops = append(p.stops, w.Close)
	return w.Client, grabhttp.WechatNotifier(w.Client, nil), nil
}

// startGatewaySim starts the company gateway's simulator, sharing
// GRAB_PAY_SECRET, and the client of it; each trade ends, a success, delay
// after it is created.
func (p *payments) startGatewaySim(cfg Config, self string, delay time.Duration) (channel.Provider, error) {
	g, err := simchannel.StartGateway(simOptions(cfg, self, delay), []byte(cfg.PaySecret))
	if err != nil {
		return nil, err
	}
	p.stops = append(p.stops, g.Close)
	return g.Client, nil
}
