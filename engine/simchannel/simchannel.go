// Package simchannel runs a payment channel's simulator in-process on a
// loopback port, with keys made at start, together with the channel's real
// client configured to talk to it: grabd's embedded mode and grabbench pay
// through these, speaking each channel's own protocol end to end (Alipay's
// RSA2 order strings, queries and form notifications; WeChat Pay's signed
// v3 requests and encrypted notifications; the company gateway's HMAC).
//
// The simulators notify Options.NotifyBase + /v1/payments/notify/{channel},
// grabd's notify route, which must read each channel's format
// (http.AlipayNotifier, http.WechatNotifier).
package simchannel

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/grab-engine/grab/engine/alipay"
	"github.com/grab-engine/grab/engine/alipaysim"
	"github.com/grab-engine/grab/engine/channel"
	"github.com/grab-engine/grab/engine/gateway"
	"github.com/grab-engine/grab/engine/gatewaysim"
	"github.com/grab-engine/grab/engine/wechatpay"
	"github.com/grab-engine/grab/engine/wechatpaysim"
)

// The simulated merchants' ids.
const (
	AlipayAppID    = "2021000000000000"
	WechatMchID    = "1900000000"
	WechatAppID    = "wx0000000000000000"
	WechatPubKeyID = "PUB_KEY_ID_0000000000000000000000000000000000"
)

// The files under Options.Dir the simulators keep their trades in.
const (
	AlipayFile  = "alipaysim.json"
	WechatFile  = "wechatpaysim.json"
	GatewayFile = "gatewaysim.json"
)

// Options shape a simulated channel.
type Options struct {
	// NotifyBase is grabd's base URL as the simulator reaches it, e.g.
	// "http://127.0.0.1:8080"; required.
	NotifyBase string
	// Dir, when set, is where the simulator keeps its trades (AlipayFile,
	// WechatFile, GatewayFile), as the real channel keeps them while grabd
	// restarts; empty keeps them in memory only.
	Dir string
	// PayAfter makes the simulator the payer: each trade is paid (the
	// gateway's: ends a success) that long after it is made. Zero: nobody
	// pays; the caller drives the simulator (Sim).
	PayAfter time.Duration
	// ResendScale multiplies the channel's resend schedule (WeChat Pay 15
	// resends over about 24 h, Alipay 8 sends over about 25 h, the gateway's
	// DefaultResend); zero means 0.01.
	ResendScale float64
	// Subject (Alipay) and Description (WeChat Pay) are what the payer
	// sees; empty means the clients' default.
	Subject, Description string
	// Timeout bounds one call of the client; zero leaves it to ctx.
	Timeout time.Duration
}

func (o Options) check() error {
	if o.NotifyBase == "" {
		return errors.New("simchannel: NotifyBase is required")
	}
	return nil
}

func (o Options) scale() float64 {
	if o.ResendScale <= 0 {
		return 0.01
	}
	return o.ResendScale
}

func (o Options) notifyURL(ch string) string { return o.NotifyBase + gateway.NotifyPath + ch }

// Alipay is a simulated Alipay channel. It implements channel.AppPayer:
// each order string it hands out is opened at the simulator at once, as the
// payer's app does with Alipay's SDK (the trade exists at Alipay only then).
type Alipay struct {
	*alipay.Client
	Sim  *alipaysim.Sim
	stop func()
}

// StartAlipay starts Alipay's simulator and its client.
func StartAlipay(o Options) (*Alipay, error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	keys, err := rsaKeys(2)
	if err != nil {
		return nil, err
	}
	appKey, alipayKey := keys[0], keys[1]
	sim, err := alipaysim.New(alipaysim.Config{AppID: AlipayAppID, AppPublicKey: &appKey.PublicKey, Key: alipayKey,
		NotifyURL: o.notifyURL(channel.Alipay), Scale: o.scale()})
	if err != nil {
		return nil, err
	}
	base, stop, err := serve(sim, sim.Persist, o.Dir, AlipayFile, sim.Stop)
	if err != nil {
		return nil, err
	}
	client, err := alipay.New(alipay.Config{AppID: AlipayAppID,
		PrivateKey:      pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(appKey)}),
		AlipayPublicKey: PublicKeyPEM(alipayKey), Gateway: base + "/gateway.do",
		NotifyURL: o.notifyURL(channel.Alipay), Subject: o.Subject, Timeout: o.Timeout})
	if err != nil {
		stop()
		return nil, err
	}
	if o.PayAfter > 0 {
		sim.PayAfter(o.PayAfter)
	}
	return &Alipay{Client: client, Sim: sim, stop: stop}, nil
}

// StartTrade implements channel.AppPayer.
func (a *Alipay) StartTrade(ctx context.Context, t channel.Trade) (map[string]string, error) {
	params, err := a.Client.StartTrade(ctx, t)
	if err != nil {
		return nil, err
	}
	if err := a.Sim.Open(params["order_string"]); err != nil {
		return nil, err
	}
	return params, nil
}

// Close stops the simulator's payer and resends, and its server.
func (a *Alipay) Close() { a.stop() }

// Wechat is a simulated WeChat Pay channel; its client places each APP
// order at the simulator.
type Wechat struct {
	*wechatpay.Client
	Sim  *wechatpaysim.Sim
	stop func()
}

// StartWechat starts WeChat Pay's simulator and its client.
func StartWechat(o Options) (*Wechat, error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	keys, err := rsaKeys(2)
	if err != nil {
		return nil, err
	}
	merchantKey, platformKey := keys[0], keys[1]
	apiV3Key := []byte(randomHex(16)) // 32 bytes
	serial := strings.ToUpper(randomHex(20))
	sim, err := wechatpaysim.New(wechatpaysim.Config{MchID: WechatMchID, AppID: WechatAppID, MerchantSerial: serial,
		MerchantKey: &merchantKey.PublicKey, APIv3Key: apiV3Key, PlatformKey: platformKey, PlatformSerial: WechatPubKeyID,
		Scale: o.scale()})
	if err != nil {
		return nil, err
	}
	base, stop, err := serve(sim, sim.Persist, o.Dir, WechatFile, sim.Shutdown)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(merchantKey)
	if err != nil {
		stop()
		return nil, err
	}
	client, err := wechatpay.New(wechatpay.Config{MchID: WechatMchID, AppID: WechatAppID, Serial: serial,
		PrivateKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), APIv3Key: apiV3Key,
		PublicKeyPEM: PublicKeyPEM(platformKey), PublicKeyID: WechatPubKeyID, BaseURL: base,
		NotifyURL: o.notifyURL(channel.Wechat), Description: o.Description, Timeout: o.Timeout})
	if err != nil {
		stop()
		return nil, err
	}
	if o.PayAfter > 0 {
		sim.PayAfter(o.PayAfter)
	}
	return &Wechat{Client: client, Sim: sim, stop: stop}, nil
}

// Close stops the simulator's payer and resends, and its server.
func (w *Wechat) Close() { w.stop() }

// Gateway is a simulated company payment gateway, serving every channel.
type Gateway struct {
	*gateway.Client
	Sim  *gatewaysim.Sim
	stop func()
}

// StartGateway starts the gateway's simulator and its client, both signing
// with secret (GRAB_PAY_SECRET, which grabd's notify route checks).
func StartGateway(o Options, secret []byte) (*Gateway, error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	resend := make([]time.Duration, len(gatewaysim.DefaultResend))
	for i, d := range gatewaysim.DefaultResend {
		resend[i] = time.Duration(float64(d) * o.scale())
	}
	sim := gatewaysim.New(secret, gatewaysim.Options{AutoComplete: o.PayAfter, Resend: resend})
	base, stop, err := serve(sim, sim.Persist, o.Dir, GatewayFile, sim.Close)
	if err != nil {
		return nil, err
	}
	client, err := gateway.New(gateway.Config{BaseURL: base, Secret: secret, NotifyBase: o.NotifyBase, Timeout: o.Timeout})
	if err != nil {
		stop()
		return nil, err
	}
	return &Gateway{Client: client, Sim: sim, stop: stop}, nil
}

// Close stops the simulator's completions and notifications, and its server.
func (g *Gateway) Close() { g.stop() }

// serve has a simulator keep its trades in dir/file (when dir is set) and
// serves it on a loopback port; stop stops the server, then the simulator
// (stopSim).
func serve(sim http.Handler, persist func(string) error, dir, file string, stopSim func()) (base string, stop func(), err error) {
	if dir != "" {
		if err := persist(filepath.Join(dir, file)); err != nil {
			stopSim()
			return "", nil, err
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		stopSim()
		return "", nil, fmt.Errorf("simulator: %w", err)
	}
	srv := &http.Server{Handler: sim, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	return "http://" + ln.Addr().String(), func() { srv.Close(); <-done; stopSim() }, nil
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

// PublicKeyPEM is key's public half as a PUBLIC KEY (PKIX) PEM block, as
// Alipay and WeChat Pay publish theirs.
func PublicKeyPEM(key *rsa.PrivateKey) []byte {
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
