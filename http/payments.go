package http

import (
	nethttp "net/http"
	"time"

	"github.com/grab-engine/grab/engine/channel"

	"github.com/gin-gonic/gin"

	"github.com/grab-engine/grab/engine/errs"
	"github.com/grab-engine/grab/engine/gateway"
)

type tradeResponse struct {
	TradeNo string `json:"trade_no"`
	Amount  Money  `json:"amount"`
	Status  string `json:"status"`
	// PayParams are what the app hands to the channel's SDK: Alipay's
	// {"order_string"}, WeChat Pay's PayReq fields; absent for channels paid
	// another way (a gateway's own page, the simulator).
	PayParams map[string]string `json:"pay_params,omitempty"`
}

type notifyRequest struct {
	TradeNo     *string `json:"trade_no"`
	Amount      *Money  `json:"amount"`
	Result      *string `json:"result"`
	ProviderTxn *string `json:"provider_txn"`
}

// maxTradeNoLen bounds a trade number from a path or a notification.
const maxTradeNoLen = 64

func (s *server) paymentReturn(c *gin.Context) {
	tradeNo := c.Param("trade_no")
	if tradeNo == "" || len(tradeNo) > maxTradeNoLen {
		s.fail(c, invalid("bad trade number"))
		return
	}
	pay, err := s.packets.PaymentReturn(c.Request.Context(), tradeNo, userID(c))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(nethttp.StatusOK, gin.H{"trade_no": pay.TradeNo, "pay_status": pay.PayStatus})
}

// paymentView is GET /v1/payments/{trade_no}: a trade as its sender sees it.
type paymentView struct {
	TradeNo      string    `json:"trade_no"`
	PacketID     int64     `json:"packet_id"`
	Channel      string    `json:"channel"`
	Amount       Money     `json:"amount"`
	PayStatus    string    `json:"pay_status"`
	GivenUp      bool      `json:"given_up"`
	CreditedBack Money     `json:"credited_back"`
	CreatedAt    time.Time `json:"created_at"`
	UpdatedAt    time.Time `json:"updated_at"`
}

func (s *server) payment(c *gin.Context) {
	tradeNo := c.Param("trade_no")
	if tradeNo == "" || len(tradeNo) > maxTradeNoLen {
		s.fail(c, invalid("bad trade number"))
		return
	}
	pay, err := s.packets.TradeOf(c.Request.Context(), tradeNo, userID(c))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(nethttp.StatusOK, paymentView{TradeNo: pay.TradeNo, PacketID: pay.PacketID, Channel: pay.Channel, Amount: Money(pay.Amount),
		PayStatus: pay.PayStatus, GivenUp: pay.GivenUp, CreditedBack: Money(pay.CreditedBack), CreatedAt: pay.CreatedAt.UTC(), UpdatedAt: pay.UpdatedAt.UTC()})
}

// notify takes a provider's signed notification. Every well-formed, correctly
// signed one is acknowledged, duplicates included, because providers resend
// until they see success. A channel with a Notifier (Alipay, WeChat Pay) is
// read and answered in its own format; the others take docs/api.md's JSON.
func (s *server) notify(c *gin.Context) {
	if ch := c.Param("channel"); !channel.Known(ch) {
		if r := []rune(ch); len(r) > 16 {
			ch = string(r[:16]) + "…"
		}
		s.fail(c, errs.Errorf(errs.CodeNotFound, "no payment channel %q", ch))
		return
	}
	nt := s.cfg.Notifiers[c.Param("channel")]
	body, err := readBody(c)
	switch {
	case err != nil && nt != nil:
		s.refuseNative(c, nt, channel.Notification{}, err)
		return
	case err != nil:
		s.fail(c, err)
		return
	case nt != nil:
		s.notifyNative(c, nt, body)
		return
	}
	// Signed as the gateway signs: lowercase hex HMAC-SHA256 of the raw
	// body with the pay secret; an empty secret verifies nothing.
	if !gateway.Verify(s.cfg.PaySecret, body, c.GetHeader(gateway.HeaderSignature)) {
		s.fail(c, errs.Errorf(errs.CodeUnauthenticated, "missing or wrong X-Grab-Signature"))
		return
	}
	var req notifyRequest
	if err := decodeJSON(body, &req); err != nil {
		s.fail(c, err)
		return
	}
	n := channel.Notification{Channel: c.Param("channel")}
	if n.TradeNo, err = requireString("trade_no", req.TradeNo); err != nil {
		s.fail(c, err)
		return
	}
	if n.Amount, err = requireMoney("amount", req.Amount); err != nil {
		s.fail(c, err)
		return
	}
	result, err := requireString("result", req.Result)
	if err != nil {
		s.fail(c, err)
		return
	}
	switch result {
	case "success":
		n.Success = true
	case "failed":
	default:
		s.fail(c, invalid("result must be success or failed"))
		return
	}
	if req.ProviderTxn != nil {
		n.ProviderTxn = *req.ProviderTxn
	}
	if len(n.TradeNo) > maxTradeNoLen || len(n.ProviderTxn) > maxTradeNoLen {
		s.fail(c, invalid("trade_no and provider_txn are at most %d bytes", maxTradeNoLen))
		return
	}
	if err := s.packets.Notify(c.Request.Context(), n); err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(nethttp.StatusOK, gin.H{"ack": "success"})
}

// notifyNative verifies a channel's own notification, applies it, and
// answers the channel's way: refusals carry the status docs/api.md gives their
// code (401 unverified, 404 unknown trade, 409 another amount, 503 busy), so
// the channel resends them.
func (s *server) notifyNative(c *gin.Context, nt Notifier, body []byte) {
	ch := c.Param("channel")
	n, apply, err := nt.Notification(c.Request.Header, body)
	switch {
	case err == nil && apply && (len(n.TradeNo) > maxTradeNoLen || len(n.ProviderTxn) > maxTradeNoLen):
		err = invalid("out_trade_no and the channel's transaction id are at most %d bytes", maxTradeNoLen)
	case err == nil && apply && n.Channel != ch:
		err = errs.Errorf(errs.CodeNotFound, "a %s notification at the %s notify URL", n.Channel, ch)
	case err == nil && apply:
		err = s.packets.Notify(c.Request.Context(), n)
	}
	if err == nil {
		nt.Ack(c.Writer)
		c.Abort()
		return
	}
	s.refuseNative(c, nt, n, err)
}

// refuseNative answers a native channel's notification with the refusal
// err maps to, in the channel's format.
func (s *server) refuseNative(c *gin.Context, nt Notifier, n channel.Notification, err error) {
	ch := c.Param("channel")
	ae, known := toAPIError(err)
	switch {
	case !known:
		s.log.ErrorContext(c.Request.Context(), "payment notification failed", "channel", ch, "trade_no", n.TradeNo, "err", err)
	case ae.Code == errs.CodeBusy:
		c.Header("Retry-After", "1")
		s.logUnavailable(c, err)
	default:
		s.log.WarnContext(c.Request.Context(), "payment notification refused", "channel", ch, "trade_no", n.TradeNo,
			"code", ae.Code, "err", ae.Message)
	}
	c.Set(ctxErrorCode, ae.Code)
	nt.Refuse(c.Writer, ae.Status, ae.Code, ae.Message)
	c.Abort()
}
