package engine

import (
	"context"
	"slices"

	"github.com/grab-engine/grab/engine/errs"
)

// ErrTradeUnknown is what a Provider's QueryTrade wraps when the provider
// does not know the trade (never created there, or past its retention): no
// outcome will come, so the reconciler ends the trade as failed. It never
// reaches a client: its code is INTERNAL.
var ErrTradeUnknown error = errs.New(errs.CodeInternal, "engine: the provider does not know the trade")

// Payment channels a packet can be paid through besides the balance.
const (
	ChannelAlipay   = "alipay"
	ChannelWechat   = "wechat"
	ChannelUnionpay = "unionpay"
)

// Channels are the payment channels besides the balance, in the order the
// API lists them.
var Channels = []string{ChannelAlipay, ChannelWechat, ChannelUnionpay}

// IsChannel reports whether c is one of Channels.
func IsChannel(c string) bool { return slices.Contains(Channels, c) }

// Provider is a third-party payment provider: grab registers each trade with
// it and, when a settlement takes too long, asks it for the outcome. The
// outcome normally arrives as a signed notification (Engine.Notify).
type Provider interface {
	CreateTrade(ctx context.Context, t Trade) error
	QueryTrade(ctx context.Context, tradeNo string) (TradeResult, error)
}

// AppPayer is a Provider whose channel is paid from the sender's app with
// parameters the server signs (Alipay's order string, WeChat Pay's PayReq).
// PayByProvider calls StartTrade in place of CreateTrade, every time the
// sender asks to pay, and hands the parameters to the app (Payment.PayParams);
// like CreateTrade it is idempotent by trade number.
type AppPayer interface {
	Provider
	StartTrade(ctx context.Context, t Trade) (PayParams map[string]string, err error)
}

// providers maps each channel to the provider that serves it: its own in
// d.Providers, else d.Provider.
func providers(d Deps) map[string]Provider {
	m := map[string]Provider{}
	for _, ch := range Channels {
		if p := d.Providers[ch]; p != nil {
			m[ch] = p
		} else if d.Provider != nil {
			m[ch] = d.Provider
		}
	}
	return m
}

// Trade is a payment the sender makes through a provider.
type Trade struct {
	TradeNo string
	Channel string
	Amount  int64 // fen
}

// TradeOutcome is what a provider knows of a trade.
type TradeOutcome int

const (
	TradePending TradeOutcome = iota
	TradeSucceeded
	TradeFailed
)

// TradeResult answers QueryTrade.
type TradeResult struct {
	Outcome     TradeOutcome
	Amount      int64 // fen
	ProviderTxn string
}
