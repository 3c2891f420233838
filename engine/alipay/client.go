// Package alipay is grab's Alipay channel, on Alipay's open-platform protocol
// (https://openapi.alipay.com/gateway.do) with the standard library only:
// requests and the App-pay order string are signed RSA2 (SHA256withRSA) with
// the app's private key; answers and asynchronous notifications are verified
// with Alipay's public key.
//
// Alipay's App pay has no server-side create: the app hands the order string
// (AppPayOrderString) to Alipay's SDK, and the trade exists at Alipay once
// the payer opens it. So CreateTrade only checks that the trade can be paid
// through Alipay, and the order string is its own method, which the API
// layer calls to answer the sender's app.
package alipay

import (
	"context"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/grab-engine/grab/engine/errs"

	"github.com/grab-engine/grab/engine/money"

	"github.com/grab-engine/grab/engine/channel"
)

// Protocol constants.
const (
	DefaultGateway = "https://openapi.alipay.com/gateway.do"
	// SandboxGateway is Alipay's sandbox.
	SandboxGateway = "https://openapi-sandbox.dl.alipaydev.com/gateway.do"

	MethodAppPay     = "alipay.trade.app.pay"
	MethodTradeQuery = "alipay.trade.query"
	ProductCode      = "QUICK_MSECURITY_PAY" // App pay
	SignType         = "RSA2"
	Charset          = "utf-8"
	Version          = "1.0"
	TimeLayout       = "2006-01-02 15:04:05" // in Asia/Shanghai

	// CodeSuccess is the code of an answer that did what was asked.
	CodeSuccess = "10000"
	// SubCodeTradeNotExist is the sub_code of a query for a trade Alipay
	// does not know (never opened by a payer, or past retention).
	SubCodeTradeNotExist = "ACQ.TRADE_NOT_EXIST"

	// Trade statuses.
	StatusWaitBuyerPay  = "WAIT_BUYER_PAY"
	StatusTradeSuccess  = "TRADE_SUCCESS"
	StatusTradeFinished = "TRADE_FINISHED"
	StatusTradeClosed   = "TRADE_CLOSED"
)

// Shanghai is Alipay's clock (China has kept UTC+8 without daylight saving
// since 1991, so no tz database is needed).
var Shanghai = time.FixedZone("Asia/Shanghai", 8*3600)

// maxReply bounds what the client reads of an answer; real ones are small.
const maxReply = 64 << 10

// maxAmount is Alipay's ceiling for one trade: 100,000,000.00 yuan.
const maxAmount = 100_000_000_00

// outTradeNo is what the client sends as out_trade_no: Alipay documents
// letters, digits and underscores up to 64 characters (grab's are
// "T<packet>_<hex>"); '-', which Alipay accepts in practice, is let through
// for trade numbers made before grab used '_'.
var outTradeNo = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Config is what a deployment gives the client.
type Config struct {
	AppID string
	// PrivateKey is the app's RSA private key: PEM (PKCS #1 or PKCS #8) or
	// the bare base64 Alipay's key tool prints.
	PrivateKey []byte
	// AlipayPublicKey is Alipay's RSA public key for this app (PEM or bare
	// base64), as the open platform shows it.
	AlipayPublicKey []byte
	// Gateway is the gateway URL; empty means DefaultGateway.
	Gateway string
	// NotifyURL is where Alipay posts the asynchronous notifications.
	NotifyURL string
	// Subject is the order title the payer sees; empty means "grab red packet".
	Subject string
	// Timeout bounds one gateway call on top of its ctx; zero leaves it to ctx.
	Timeout time.Duration
	// HTTPClient is used for gateway calls; nil means http.DefaultClient.
	HTTPClient *http.Client
	// Now is the clock of the timestamps; nil means time.Now.
	Now func() time.Time
}

// Client is the Alipay channel. It implements channel.Provider.
type Client struct {
	appID     string
	key       *rsa.PrivateKey
	alipay    *rsa.PublicKey
	gateway   string
	notifyURL string
	subject   string
	timeout   time.Duration
	http      *http.Client
	now       func() time.Time
}

var _ channel.Provider = (*Client)(nil)

// String keeps keys out of logs: only the identifiers and URLs are shown.
func (c Config) String() string {
	return fmt.Sprintf("alipay.Config{AppID:%s Gateway:%s NotifyURL:%s}", c.AppID, c.Gateway, c.NotifyURL)
}

// GoString is String, for %#v.
func (c Config) GoString() string { return c.String() }

// New checks the configuration and parses the keys. Its errors never quote
// key material.
func New(cfg Config) (*Client, error) {
	if cfg.AppID == "" {
		return nil, errors.New("alipay: an app id is required")
	}
	key, err := ParsePrivateKey(cfg.PrivateKey)
	if err != nil {
		return nil, err
	}
	pub, err := ParsePublicKey(cfg.AlipayPublicKey)
	if err != nil {
		return nil, err
	}
	if cfg.Gateway == "" {
		cfg.Gateway = DefaultGateway
	}
	if u, err := url.Parse(cfg.Gateway); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("alipay: gateway %q is not an http(s) URL", cfg.Gateway)
	}
	if cfg.NotifyURL != "" {
		if u, err := url.Parse(cfg.NotifyURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return nil, fmt.Errorf("alipay: notify URL %q is not an http(s) URL", cfg.NotifyURL)
		}
	}
	if cfg.Subject == "" {
		cfg.Subject = "grab red packet"
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = http.DefaultClient
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Client{appID: cfg.AppID, key: key, alipay: pub, gateway: cfg.Gateway, notifyURL: cfg.NotifyURL,
		subject: cfg.Subject, timeout: cfg.Timeout, http: cfg.HTTPClient, now: cfg.Now}, nil
}

// AppID is the app the client speaks for.
func (c *Client) AppID() string { return c.appID }

// CreateTrade implements channel.Provider. App pay has no server-side create
// (the trade appears at Alipay when the payer opens the order string), so it
// only checks that the trade can go through Alipay and keeps nothing; the
// API layer asks AppPayOrderString for what the app needs.
func (c *Client) CreateTrade(_ context.Context, t channel.Trade) error {
	return check(t)
}

// StartTrade implements channel.AppPayer: the pay parameters are
// {"order_string": AppPayOrderString(t)}, which the app hands to Alipay's SDK.
func (c *Client) StartTrade(_ context.Context, t channel.Trade) (map[string]string, error) {
	s, err := c.AppPayOrderString(t)
	if err != nil {
		return nil, err
	}
	return map[string]string{"order_string": s}, nil
}

func check(t channel.Trade) error {
	if t.Channel != "" && t.Channel != channel.Alipay {
		return fmt.Errorf("%w: alipay: trade %s is on channel %s", errs.ErrInvalidArgument, t.TradeNo, t.Channel)
	}
	if !outTradeNo.MatchString(t.TradeNo) {
		return fmt.Errorf("%w: alipay: trade number %q must be 1 to 64 letters, digits, '_' or '-'", errs.ErrInvalidArgument, t.TradeNo)
	}
	if t.Amount <= 0 || t.Amount > maxAmount {
		return fmt.Errorf("%w: alipay: amount %s must be 0.01 to 100000000.00", errs.ErrInvalidArgument, money.Format(t.Amount))
	}
	return nil
}

// common is the public parameters of every call, before biz_content and sign.
func (c *Client) common(method string) url.Values {
	v := url.Values{}
	v.Set("app_id", c.appID)
	v.Set("method", method)
	v.Set("format", "JSON")
	v.Set("charset", Charset)
	v.Set("sign_type", SignType)
	v.Set("timestamp", c.now().In(Shanghai).Format(TimeLayout))
	v.Set("version", Version)
	return v
}

// signed adds biz_content and the sign over every other non-empty parameter.
func (c *Client) signed(v url.Values, biz any) (url.Values, error) {
	b, err := json.Marshal(biz)
	if err != nil {
		return nil, err
	}
	v.Set("biz_content", string(b))
	sign, err := Sign(c.key, []byte(SignContent(v, "sign")))
	if err != nil {
		return nil, err
	}
	v.Set("sign", sign)
	return v, nil
}

type appPayBiz struct {
	OutTradeNo  string `json:"out_trade_no"`
	TotalAmount string `json:"total_amount"`
	Subject     string `json:"subject"`
	ProductCode string `json:"product_code"`
}

// AppPayOrderString is the signed, URL-encoded alipay.trade.app.pay order
// string the sender's app hands to Alipay's SDK (payV2 / payOrder). It keeps
// nothing; the same trade gives a new string (new timestamp) each time.
func (c *Client) AppPayOrderString(t channel.Trade) (string, error) {
	if err := check(t); err != nil {
		return "", err
	}
	v := c.common(MethodAppPay)
	if c.notifyURL != "" {
		v.Set("notify_url", c.notifyURL)
	}
	v, err := c.signed(v, appPayBiz{OutTradeNo: t.TradeNo, TotalAmount: money.Format(t.Amount),
		Subject: c.subject, ProductCode: ProductCode})
	if err != nil {
		return "", fmt.Errorf("alipay: order string of %s: %w", t.TradeNo, err)
	}
	return v.Encode(), nil
}

// QueryResponse is the body of alipay_trade_query_response (the fields grab
// reads).
type QueryResponse struct {
	Code        string `json:"code"`
	Msg         string `json:"msg"`
	SubCode     string `json:"sub_code,omitempty"`
	SubMsg      string `json:"sub_msg,omitempty"`
	TradeNo     string `json:"trade_no,omitempty"`
	OutTradeNo  string `json:"out_trade_no,omitempty"`
	TradeStatus string `json:"trade_status,omitempty"`
	TotalAmount string `json:"total_amount,omitempty"`
}

// QueryTrade implements channel.Provider with alipay.trade.query. The answer's
// sign must verify over the exact JSON text of alipay_trade_query_response;
// ACQ.TRADE_NOT_EXIST (signed) wraps channel.ErrTradeUnknown. Anything else
// unreadable, unsigned or refused is an error: the outcome stays unknown.
func (c *Client) QueryTrade(ctx context.Context, tradeNo string) (channel.TradeResult, error) {
	v, err := c.signed(c.common(MethodTradeQuery), map[string]string{"out_trade_no": tradeNo})
	if err != nil {
		return channel.TradeResult{}, fmt.Errorf("alipay: query %s: %w", tradeNo, err)
	}
	raw, err := c.call(ctx, v, "alipay_trade_query_response")
	if err != nil {
		return channel.TradeResult{}, fmt.Errorf("alipay: query %s: %w", tradeNo, err)
	}
	var r QueryResponse
	if err := json.Unmarshal(raw, &r); err != nil {
		return channel.TradeResult{}, fmt.Errorf("alipay: query %s: reading the answer: %w", tradeNo, err)
	}
	if r.Code != CodeSuccess {
		if r.SubCode == SubCodeTradeNotExist {
			return channel.TradeResult{}, fmt.Errorf("%w: alipay: %s (%s)", channel.ErrTradeUnknown, SubCodeTradeNotExist, tradeNo)
		}
		return channel.TradeResult{}, fmt.Errorf("alipay: query %s: code %s %s, sub_code %s %s", tradeNo, r.Code, r.Msg, r.SubCode, r.SubMsg)
	}
	if r.OutTradeNo != "" && r.OutTradeNo != tradeNo {
		return channel.TradeResult{}, fmt.Errorf("alipay: query %s: the answer is about trade %s", tradeNo, r.OutTradeNo)
	}
	res := channel.TradeResult{ProviderTxn: r.TradeNo}
	switch r.TradeStatus {
	case StatusWaitBuyerPay:
		res.Outcome = channel.TradePending
	case StatusTradeSuccess, StatusTradeFinished:
		res.Outcome = channel.TradeSucceeded
	case StatusTradeClosed:
		res.Outcome = channel.TradeFailed
	default:
		return channel.TradeResult{}, fmt.Errorf("alipay: query %s: unknown trade_status %q", tradeNo, r.TradeStatus)
	}
	if r.TotalAmount != "" || res.Outcome != channel.TradePending {
		if res.Amount, err = money.Parse(r.TotalAmount); err != nil {
			return channel.TradeResult{}, fmt.Errorf("alipay: query %s: total_amount: %w", tradeNo, err)
		}
	}
	return res, nil
}

// call posts a signed form to the gateway and returns the verified JSON text
// of the answer's field (e.g. alipay_trade_query_response).
func (c *Client) call(ctx context.Context, v url.Values, field string) (json.RawMessage, error) {
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.gateway, strings.NewReader(v.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded;charset=utf-8")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxReply+1))
	if err != nil {
		return nil, fmt.Errorf("reading the %d answer: %w", resp.StatusCode, err)
	}
	if len(body) > maxReply {
		return nil, fmt.Errorf("the %d answer is over %d bytes", resp.StatusCode, maxReply)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("gateway answered %d: %s", resp.StatusCode, snippet(body))
	}
	return Response(body, field, c.alipay)
}

// Response returns the exact JSON text of field in a gateway answer once the
// answer's sign verifies over it with Alipay's public key. An answer carrying
// only error_response (unsigned: the gateway refused the call itself) is an
// error naming its code.
func Response(body []byte, field string, alipay *rsa.PublicKey) (json.RawMessage, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		return nil, fmt.Errorf("the answer is not a JSON object: %s", snippet(body))
	}
	raw, ok := top[field]
	if !ok {
		if e, ok := top["error_response"]; ok {
			return nil, fmt.Errorf("gateway error_response %s", snippet(e))
		}
		return nil, fmt.Errorf("the answer has no %s: %s", field, snippet(body))
	}
	var sign string
	if s, ok := top["sign"]; ok {
		if err := json.Unmarshal(s, &sign); err != nil {
			return nil, fmt.Errorf("%w: sign is not a string", ErrBadSignature)
		}
	}
	if err := Verify(alipay, raw, sign); err != nil {
		return nil, fmt.Errorf("the answer's %s: %w", field, err)
	}
	return raw, nil
}

// snippet is the start of an answer for an error message.
func snippet(b []byte) string {
	const n = 200
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}
