package engine

import (
	"context"
	"errors"
)

// ErrTradeUnknown is what a Provider's QueryTrade wraps when the provider
// does not know the trade (never created there, or past its retention): no
// outcome will come, so the reconciler ends the trade as failed.
var ErrTradeUnknown = errors.New("engine: the provider does not know the trade")

// Payment channels a packet can be paid through besides the balance.
const (
	ChannelAlipay   = "alipay"
	ChannelWechat   = "wechat"
	ChannelUnionpay = "unionpay"
)

// Provider is a third-party payment provider: grab registers each trade with
// it and, when a settlement takes too long, asks it for the outcome. The
// outcome normally arrives as a signed notification (Engine.Notify).
type Provider interface {
	CreateTrade(ctx context.Context, t Trade) error
	QueryTrade(ctx context.Context, tradeNo string) (TradeResult, error)
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
