// Package gateway is the HTTP client of a company payment gateway
// (channel.Provider): a payment center of the company's own that talks to
// Alipay, WeChat Pay and UnionPay, and to which grab hands every
// third-party trade whatever its channel. This file is the wire protocol;
// the simulator lives apart, in engine/gatewaysim, and speaks it through
// this package's types, so the two cannot drift.
//
// # Protocol
//
// JSON over HTTP. Amounts are yuan as decimal strings with two fraction
// digits ("20.00"), never JSON numbers. {base} is GRAB_PAY_URL (scheme, host
// and any path prefix).
//
//	POST {base}/trades
//	    {"trade_no":"T1-ab12","channel":"alipay","amount":"20.00",
//	     "notify_url":"https://grab.example.com/v1/payments/notify/alipay"}
//	200 {"trade_no":"T1-ab12","status":"pending","amount":"20.00","provider_txn":""}
//	    The same trade again (same number, channel and amount) answers the
//	    trade as it stands and creates nothing.
//	409 {"error":"conflict"}: the number is held with another channel or amount.
//
//	GET {base}/trades/{trade_no}
//	200 {"trade_no":"T1-ab12","status":"pending"|"success"|"failed","amount":"20.00",
//	     "provider_txn":"2026120122001"}
//	404 {"error":"not_found"}: the gateway does not know the trade (never
//	    created, or past its retention); grab ends the trade as failed.
//
// Other answers: 400 {"error":"malformed"} for a request the gateway cannot
// read, 401 {"error":"unauthorized"} for a bad signature, 5xx when it failed
// (grab tries again later: the create on the next pay request, the query on
// the next reconciliation pass).
//
// Every request carries X-Grab-Signature, the lowercase hex HMAC-SHA256
// under GRAB_PAY_SECRET of the raw body for the POST, and of the request
// path below {base} for the GET ("/trades/T1-ab12", escaped as sent). The
// gateway's notifications to notify_url are signed the same way over their
// body, as grabd's notify endpoint verifies.
package gateway

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"regexp"

	"github.com/grab-engine/grab/engine/money"

	"github.com/grab-engine/grab/engine/channel"
)

// Paths, headers and codes of the protocol.
const (
	PathTrades      = "/trades"
	HeaderSignature = "X-Grab-Signature"
	// NotifyPath is grabd's notify endpoint below its public base URL; the
	// channel follows it.
	NotifyPath = "/v1/payments/notify/"

	StatusPending = "pending"
	StatusSuccess = "success"
	StatusFailed  = "failed"

	CodeConflict     = "conflict"
	CodeNotFound     = "not_found"
	CodeMalformed    = "malformed"
	CodeUnauthorized = "unauthorized"
	CodeUnavailable  = "unavailable"
)

// CreateRequest is the body of POST /trades.
type CreateRequest struct {
	TradeNo   string `json:"trade_no"`
	Channel   string `json:"channel"`
	Amount    string `json:"amount"`
	NotifyURL string `json:"notify_url"`
}

// TradeReply is the gateway's answer about one trade, to a create or a query.
type TradeReply struct {
	TradeNo     string `json:"trade_no"`
	Status      string `json:"status"`
	Amount      string `json:"amount"`
	ProviderTxn string `json:"provider_txn"`
}

// ErrorReply is the body of an error answer.
type ErrorReply struct {
	Error  string `json:"error"`
	Detail string `json:"detail,omitempty"`
}

// Notification is the body the gateway posts to notify_url: grabd's notify
// format (docs/api.md).
type Notification struct {
	TradeNo     string `json:"trade_no"`
	Amount      string `json:"amount"`
	Result      string `json:"result"` // success | failed
	ProviderTxn string `json:"provider_txn"`
}

var tradeNoRE = regexp.MustCompile(`^[0-9A-Za-z_-]{1,64}$`)

// ValidTradeNo reports a trade number the protocol carries: 1 to 64 of
// [0-9A-Za-z_-] (grab's are "T<packet>_<hex>").
func ValidTradeNo(s string) bool { return tradeNoRE.MatchString(s) }

// ErrMalformed is what Trade returns for a request the gateway must refuse.
var ErrMalformed = errors.New("gateway: malformed request")

// Trade checks a create request and returns the trade it asks for.
func (r CreateRequest) Trade() (channel.Trade, error) {
	if !ValidTradeNo(r.TradeNo) {
		return channel.Trade{}, fmt.Errorf("%w: trade_no must be 1 to 64 of [0-9A-Za-z_-]", ErrMalformed)
	}
	if !channel.Known(r.Channel) {
		return channel.Trade{}, fmt.Errorf("%w: channel must be alipay, wechat or unionpay", ErrMalformed)
	}
	fen, err := money.Parse(r.Amount)
	if err != nil || fen <= 0 || money.Format(fen) != r.Amount {
		return channel.Trade{}, fmt.Errorf("%w: amount must be yuan with two decimals, e.g. \"20.00\"", ErrMalformed)
	}
	u, err := url.Parse(r.NotifyURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return channel.Trade{}, fmt.Errorf("%w: notify_url must be an http or https URL", ErrMalformed)
	}
	return channel.Trade{TradeNo: r.TradeNo, Channel: r.Channel, Amount: fen}, nil
}

// Sign is the X-Grab-Signature of data (a body, or a GET's path): lowercase
// hex HMAC-SHA256 under secret.
func Sign(secret, data []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(data)
	return hex.EncodeToString(m.Sum(nil))
}

// Verify checks a signature of data in constant time; only lowercase hex
// passes, and an empty secret verifies nothing.
func Verify(secret, data []byte, signature string) bool {
	if len(secret) == 0 {
		return false
	}
	got, err := hex.DecodeString(signature)
	if err != nil || signature != hex.EncodeToString(got) {
		return false
	}
	m := hmac.New(sha256.New, secret)
	m.Write(data)
	return hmac.Equal(got, m.Sum(nil))
}

// TradePath is the path of a trade's query below the base URL, escaped as
// sent and as signed.
func TradePath(tradeNo string) string { return PathTrades + "/" + url.PathEscape(tradeNo) }
