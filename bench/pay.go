package bench

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/grab-engine/grab/engine/packet"

	"github.com/grab-engine/grab"
	"github.com/grab-engine/grab/engine/channel"
	"github.com/grab-engine/grab/engine/simchannel"
	grabhttp "github.com/grab-engine/grab/http"
	"github.com/grab-engine/grab/store"
)

// PayMethods are how group-storm's packets can be paid: by the senders'
// balance, or through a payment channel's simulator speaking its real
// protocol (Alipay, WeChat Pay, or the company gateway for unionpay).
var PayMethods = []string{"balance", channel.Alipay, channel.Wechat, channel.Unionpay}

// payAfter is how long after the sender's app returns the simulated payer
// pays: the packets open at the return, so the first grabs land before the
// notification and are credited at its settlement, the rest after.
const payAfter = 200 * time.Millisecond

// channelPayer is the engine's provider for the paying channel: the
// simulated channel of the run in progress. The harness makes one engine for
// every run; each run pays through a simulator of its own.
type channelPayer struct {
	cur atomic.Pointer[channel.Provider]
}

var errNoChannel = errors.New("bench: no group-storm run is paying through a channel")

func (p *channelPayer) get() (channel.Provider, error) {
	if c := p.cur.Load(); c != nil {
		return *c, nil
	}
	return nil, errNoChannel
}

// CreateTrade implements channel.Provider.
func (p *channelPayer) CreateTrade(ctx context.Context, t channel.Trade) error {
	c, err := p.get()
	if err != nil {
		return err
	}
	return c.CreateTrade(ctx, t)
}

// QueryTrade implements channel.Provider.
func (p *channelPayer) QueryTrade(ctx context.Context, tradeNo string) (channel.TradeResult, error) {
	c, err := p.get()
	if err != nil {
		return channel.TradeResult{}, err
	}
	return c.QueryTrade(ctx, tradeNo)
}

// StartTrade implements channel.AppPayer for the channels that have pay
// parameters, and registers the trade for those that do not.
func (p *channelPayer) StartTrade(ctx context.Context, t channel.Trade) (map[string]string, error) {
	c, err := p.get()
	if err != nil {
		return nil, err
	}
	if app, ok := c.(channel.AppPayer); ok {
		return app.StartTrade(ctx, t)
	}
	return nil, c.CreateTrade(ctx, t)
}

// payThrough makes the engine pay s.Pay through the channel payer.
func (s *GroupStorm) payThrough(d *grab.Deps) {
	if s.payer == nil {
		s.payer = &channelPayer{}
	}
	if s.Pay == channel.Unionpay {
		d.Payments.Provider = s.payer // the company gateway serves the channels it is not told of
		return
	}
	d.Payments.Providers = map[string]channel.Provider{s.Pay: s.payer}
}

// startChannel serves grabd's notify route for eng on a loopback port and
// starts the simulated channel of s.Pay notifying it, its payer paying each
// trade payAfter after it is made; both stop when ctx ends.
func (s *GroupStorm) startChannel(ctx context.Context, eng *grab.Grab) error {
	secret := make([]byte, 16)
	rand.Read(secret)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	o := simchannel.Options{NotifyBase: "http://" + l.Addr().String(), PayAfter: payAfter, ResendScale: 0.001, Timeout: 5 * time.Second}
	var provider channel.Provider
	notifiers := map[string]grabhttp.Notifier{}
	var stop func()
	switch s.Pay {
	case channel.Alipay:
		a, err := simchannel.StartAlipay(o)
		if err != nil {
			l.Close()
			return err
		}
		provider, notifiers[s.Pay], stop = a, grabhttp.AlipayNotifier(a.Client), a.Close
	case channel.Wechat:
		w, err := simchannel.StartWechat(o)
		if err != nil {
			l.Close()
			return err
		}
		provider, notifiers[s.Pay], stop = w.Client, grabhttp.WechatNotifier(w.Client, nil), w.Close
	default:
		g, err := simchannel.StartGateway(o, secret)
		if err != nil {
			l.Close()
			return err
		}
		provider, stop = g.Client, g.Close
	}
	srv := &http.Server{Handler: grabhttp.New(eng, grabhttp.Config{PaySecret: secret, Notifiers: notifiers}, slog.New(slog.DiscardHandler), nil),
		ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l)
	s.payer.cur.Store(&provider)
	context.AfterFunc(ctx, func() {
		s.payer.cur.CompareAndSwap(&provider, nil)
		stop()
		srv.Close()
	})
	return nil
}

// sendAndPayThrough creates a packet, pays it through the channel and
// reports the sender's return, as the app does: the packet opens for grabs,
// credited when the channel's notification settles the trade.
func sendAndPayThrough(ctx context.Context, eng *packet.Service, ch string, senderID, groupID int64, count int, fen int64) (int64, string, error) {
	p, err := eng.CreatePacket(ctx, packet.NewPacket{SenderID: senderID, Kind: packet.KindGroupLucky, GroupID: groupID, Count: count, Amount: fen})
	if err != nil {
		return 0, "", err
	}
	pay, err := eng.PayByProvider(ctx, p.ID, senderID, ch)
	if err != nil {
		return 0, "", err
	}
	if _, err := eng.PaymentReturn(ctx, pay.TradeNo, senderID); err != nil {
		return 0, "", err
	}
	return p.ID, pay.TradeNo, nil
}

// settlePayments waits until every trade is paid, its notification taken,
// then reconciles until no grab of the packets is left uncredited; sweeps
// counts the reconciliation passes.
func settlePayments(ctx context.Context, eng *packet.Service, db *store.DB, trades []string, packets []int64) (sweeps int, err error) {
	const timeout = time.Minute
	left := trades
	err = poll(ctx, timeout, func() (bool, error) {
		for len(left) > 0 {
			pay, err := db.Payment(ctx, left[0])
			if err != nil || pay.Status != store.PaymentPaid {
				return false, err
			}
			left = left[1:]
		}
		return true, nil
	})
	if errors.Is(err, errTimedOut) {
		return 0, fmt.Errorf("%d of %d payments not paid after %v", len(left), len(trades), timeout)
	}
	if err != nil {
		return 0, err
	}
	var uncredited int64
	err = poll(ctx, timeout, func() (bool, error) {
		sweeps++
		if _, err := eng.Reconcile(ctx); err != nil {
			return false, err
		}
		uncredited, err = uncreditedShares(ctx, db, packets)
		return uncredited == 0, err
	})
	if errors.Is(err, errTimedOut) {
		return sweeps, fmt.Errorf("%d grabs of paid packets not credited after %v", uncredited, timeout)
	}
	return sweeps, err
}
