package alipay

import (
	"errors"
	"fmt"
	"net/url"

	"github.com/grab-engine/grab/engine/errs"

	"github.com/grab-engine/grab/engine/money"

	"github.com/grab-engine/grab/engine/channel"
)

// Ack is the plain-text body grab must answer an asynchronous notification
// with once it has applied it (HTTP 200, exactly these seven bytes, no JSON,
// no newline). Anything else and Alipay sends it again, 8 times over about
// 25 hours (4m, 10m, 10m, 1h, 2h, 6h, 15h).
const Ack = "success"

// ErrNotFinal is what VerifyNotification wraps for a genuine notification of
// a trade still waiting for the payer (WAIT_BUYER_PAY): nothing to apply; a
// final one follows, so the receiver may answer Ack to it.
var ErrNotFinal = errors.New("alipay: the trade is not final")

// ErrWrongApp is what VerifyNotification wraps for a notification signed by
// Alipay for another app.
var ErrWrongApp = errors.New("alipay: the notification is for another app")

// VerifyNotification checks an asynchronous notification (the POSTed form)
// and turns it into grab's: the sign must verify with Alipay's public key
// over the sorted parameters without sign and sign_type, app_id must be ours,
// and trade_status final. A refusal wraps ErrBadSignature, ErrWrongApp,
// ErrNotFinal or errs.ErrInvalidArgument.
func (c *Client) VerifyNotification(form url.Values) (channel.Notification, error) {
	if st := form.Get("sign_type"); st != "" && st != SignType {
		return channel.Notification{}, fmt.Errorf("%w: sign_type %q, only %s is accepted", ErrBadSignature, st, SignType)
	}
	for k, v := range form {
		if len(v) > 1 {
			return channel.Notification{}, fmt.Errorf("%w: alipay notification: parameter %s repeated", errs.ErrInvalidArgument, k)
		}
	}
	if err := Verify(c.alipay, []byte(SignContent(form, "sign", "sign_type")), form.Get("sign")); err != nil {
		return channel.Notification{}, fmt.Errorf("alipay notification for %q: %w", form.Get("out_trade_no"), err)
	}
	if app := form.Get("app_id"); app != c.appID {
		return channel.Notification{}, fmt.Errorf("%w: app_id %q, ours is %q", ErrWrongApp, app, c.appID)
	}
	tradeNo := form.Get("out_trade_no")
	if tradeNo == "" {
		return channel.Notification{}, fmt.Errorf("%w: alipay notification without out_trade_no", errs.ErrInvalidArgument)
	}
	n := channel.Notification{Channel: channel.Alipay, TradeNo: tradeNo, ProviderTxn: form.Get("trade_no")}
	switch st := form.Get("trade_status"); st {
	case StatusTradeSuccess, StatusTradeFinished:
		n.Success = true
	case StatusTradeClosed:
		n.Success = false
	case StatusWaitBuyerPay:
		return channel.Notification{}, fmt.Errorf("%w: trade %s is %s (the payer has not paid yet)", ErrNotFinal, tradeNo, st)
	default:
		return channel.Notification{}, fmt.Errorf("%w: alipay notification for %s: unknown trade_status %q", errs.ErrInvalidArgument, tradeNo, st)
	}
	amount, err := money.Parse(form.Get("total_amount"))
	if err != nil {
		return channel.Notification{}, fmt.Errorf("alipay notification for %s: total_amount: %w", tradeNo, err)
	}
	n.Amount = amount
	return n, nil
}
