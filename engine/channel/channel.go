// Package channel is the contract between grab and a third-party payment
// channel (Alipay, WeChat Pay, a company gateway): the Provider a channel's
// client implements, and the trades and outcomes they exchange. It imports
// nothing but the standard library, so a channel's client or simulator
// implements it without importing Redis, MySQL or the engine.
package channel

import (
	"context"
	"errors"
	"slices"
)

// ErrTradeUnknown is what a Provider's QueryTrade wraps when the provider
// does not know the trade (never created there, or past its retention): no
// outcome will come, so the reconciler ends the trade as failed.
var ErrTradeUnknown = errors.New("channel: the provider does not know the trade")

// Payment channels a packet can be paid through besides the balance.
const (
	Alipay   = "alipay"
	Wechat   = "wechat"
	Unionpay = "unionpay"
)

// All are the payment channels besides the balance, in the order the API
// lists them.
var All = []string{Alipay, Wechat, Unionpay}

// Known reports whether c is one of All.
func Known(c string) bool { return slices.Contains(All, c) }

// Provider is a third-party payment provider: grab registers each trade with
// it and, when a settlement takes too long, asks it for the outcome. The
// outcome normally arrives as a signed notification (packet.Service.Notify).
type Provider interface {
	CreateTrade(ctx context.Context, t Trade) error
	QueryTrade(ctx context.Context, tradeNo string) (TradeResult, error)
}

// AppPayer is a Provider whose channel is paid from the sender's app with
// parameters the server signs (Alipay's order string, WeChat Pay's PayReq).
// packet.Service.PayByProvider calls StartTrade in place of CreateTrade,
// every time the sender asks to pay, and hands the parameters to the app;
// like CreateTrade it is idempotent by trade number.
type AppPayer interface {
	Provider
	StartTrade(ctx context.Context, t Trade) (PayParams map[string]string, err error)
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

// Notification is a provider's asynchronous word on a trade, as its channel's
// notifier read and verified it.
type Notification struct {
	Channel     string
	TradeNo     string
	Amount      int64 // fen
	Success     bool
	ProviderTxn string
}
