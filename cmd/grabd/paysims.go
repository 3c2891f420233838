package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	nethttp "net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/engine/alipay"
	"github.com/grab-engine/grab/engine/alipaysim"
	"github.com/grab-engine/grab/engine/gateway"
	"github.com/grab-engine/grab/engine/gatewaysim"
	"github.com/grab-engine/grab/engine/wechatpay"
	"github.com/grab-engine/grab/engine/wechatpaysim"
	grabhttp "github.com/grab-engine/grab/http"
)

// The embedded mode's simulated channels: their ids, and how much faster
// than the real channels they resend a notification grabd did not take.
const (
	simAlipayAppID    = "2021000000000000"
	simWechatMchID    = "1900000000"
	simWechatAppID    = "wx0000000000000000"
	simWechatPubKeyID = "PUB_KEY_ID_0000000000000000000000000000000000"
	simResendScale    = 0.01
)

// The files under GRAB_DATA_DIR the simulators keep their trades in.
const (
	alipaySimFile  = "alipaysim.json"
	wechatSimFile  = "wechatpaysim.json"
	gatewaySimFile = "gatewaysim.json"
)

// startAlipaySim starts Alipay's simulator on a loopback port with keys made
// now, and the channel's client of it with the demo's payer. The simulator
// keeps its trades in the data directory and pays each one delay after the
// app opens its order string.
func (p *payments) startAlipaySim(cfg Config, self string, delay time.Duration) (engine.Provider, grabhttp.Notifier, error) {
	keys, err := rsaKeys(2)
	if err != nil {
		return nil, nil, err
	}
	appKey, alipayKey := keys[0], keys[1]
	sim, err := alipaysim.New(alipaysim.Config{AppID: simAlipayAppID, AppPublicKey: &appKey.PublicKey, Key: alipayKey,
		NotifyURL: self + gateway.NotifyPath + engine.ChannelAlipay, Scale: simResendScale})
	if err != nil {
		return nil, nil, err
	}
	p.stops = append(p.stops, sim.Stop)
	base, err := p.serveSim(sim, sim.Persist, filepath.Join(cfg.DataDir, alipaySimFile))
	if err != nil {
		return nil, nil, err
	}
	client, err := alipay.New(alipay.Config{AppID: simAlipayAppID,
		PrivateKey:      pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(appKey)}),
		AlipayPublicKey: publicKeyPEM(alipayKey), Gateway: base + "/gateway.do",
		NotifyURL: self + gateway.NotifyPath + engine.ChannelAlipay, Subject: cfg.Alipay.Subject, Timeout: cfg.Alipay.Timeout})
	if err != nil {
		return nil, nil, err
	}
	sim.PayAfter(delay)
	return demoAlipayPayer{client, sim}, grabhttp.AlipayNotifier(client), nil
}

// demoAlipayPayer is the simulated Alipay channel with the demo's payer: a
// trade exists at Alipay only once the payer's app opens its order string,
// so each order string handed out is opened at once, as the app would.
type demoAlipayPayer struct {
	*alipay.Client
	sim *alipaysim.Sim
}

// StartTrade implements engine.AppPayer.
func (d demoAlipayPayer) StartTrade(ctx context.Context, t engine.Trade) (map[string]string, error) {
	params, err := d.Client.StartTrade(ctx, t)
	if err != nil {
		return nil, err
	}
	if err := d.sim.Open(params["order_string"]); err != nil {
		return nil, err
	}
	return params, nil
}

// startWechatSim starts WeChat Pay's simulator on a loopback port with keys
// made now, and the channel's client of it. The simulator keeps its orders in the
// data directory and pays each one delay after it is placed.
func (p *payments) startWechatSim(cfg Config, self string, delay time.Duration) (engine.Provider, grabhttp.Notifier, error) {
	keys, err := rsaKeys(2)
	if err != nil {
		return nil, nil, err
	}
	merchantKey, platformKey := keys[0], keys[1]
	apiV3Key := []byte(randomSecret()[:32])
	serial := strings.ToUpper(randomSecret()[:40])
	sim, err := wechatpaysim.New(wechatpaysim.Config{MchID: simWechatMchID, AppID: simWechatAppID, MerchantSerial: serial,
		MerchantKey: &merchantKey.PublicKey, APIv3Key: apiV3Key, PlatformKey: platformKey, PlatformSerial: simWechatPubKeyID,
		Scale: simResendScale})
	if err != nil {
		return nil, nil, err
	}
	p.stops = append(p.stops, sim.Shutdown)
	base, err := p.serveSim(sim, sim.Persist, filepath.Join(cfg.DataDir, wechatSimFile))
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(merchantKey)
	if err != nil {
		return nil, nil, err
	}
	client, err := wechatpay.New(wechatpay.Config{MchID: simWechatMchID, AppID: simWechatAppID, Serial: serial,
		PrivateKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), APIv3Key: apiV3Key,
		PublicKeyPEM: publicKeyPEM(platformKey), PublicKeyID: simWechatPubKeyID, BaseURL: base,
		NotifyURL: self + gateway.NotifyPath + engine.ChannelWechat, Description: cfg.Wechat.Description, Timeout: cfg.Wechat.Timeout})
	if err != nil {
		return nil, nil, err
	}
	sim.PayAfter(delay)
	return client, grabhttp.WechatNotifier(client, nil), nil
}

// startGatewaySim starts the company gateway's simulator on a loopback port,
// sharing GRAB_PAY_SECRET, and the client of it. The simulator keeps its
// trades in the data directory and ends each one, a success, delay after it
// is created.
func (p *payments) startGatewaySim(cfg Config, self string, delay time.Duration) (*gateway.Client, error) {
	resend := make([]time.Duration, len(gatewaysim.DefaultResend))
	for i, d := range gatewaysim.DefaultResend {
		resend[i] = time.Duration(float64(d) * simResendScale)
	}
	sim := gatewaysim.New([]byte(cfg.PaySecret), gatewaysim.Options{AutoComplete: delay, Resend: resend})
	p.stops = append(p.stops, sim.Close)
	base, err := p.serveSim(sim, sim.Persist, filepath.Join(cfg.DataDir, gatewaySimFile))
	if err != nil {
		return nil, err
	}
	return gateway.New(gateway.Config{BaseURL: base, Secret: []byte(cfg.PaySecret), NotifyBase: self})
}

// serveSim has a simulator keep its trades in file, as the real channel
// keeps them while grabd restarts, and serves it on a loopback port until
// the payments stop; base is its URL.
func (p *payments) serveSim(sim nethttp.Handler, persist func(string) error, file string) (base string, err error) {
	if err := persist(file); err != nil {
		return "", err
	}
	base, stop, err := serveLoopback(sim)
	if err != nil {
		return "", fmt.Errorf("embedded simulator: %w", err)
	}
	p.stops = append(p.stops, stop)
	return base, nil
}

// rsaKeys makes n RSA keys of 2048 bits, the size the channels use.
func rsaKeys(n int) ([]*rsa.PrivateKey, error) {
	keys := make([]*rsa.PrivateKey, n)
	for i := range keys {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return nil, err
		}
		keys[i] = k
	}
	return keys, nil
}

// publicKeyPEM is key's public half as a PUBLIC KEY (PKIX) PEM block.
func publicKeyPEM(key *rsa.PrivateKey) []byte {
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}
