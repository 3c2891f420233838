package gateway

import (
	"github.com/grab-engine/grab/engine/internal/jsonreply"

	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/grab-engine/grab/engine/money"

	"github.com/grab-engine/grab/engine/channel"
)

// maxReply bounds what the client reads of an answer; real ones are tiny.
const maxReply = 64 << 10

// DefaultTimeout bounds one call when Config.Timeout is zero.
const DefaultTimeout = 5 * time.Second

// Config is what a Client needs.
type Config struct {
	// BaseURL is the gateway's (GRAB_PAY_URL): scheme, host and any path
	// prefix, e.g. "https://pay.internal/api".
	BaseURL string
	// Secret signs the requests (GRAB_PAY_SECRET); the gateway signs its
	// notifications with it too.
	Secret []byte
	// NotifyBase is grabd's public base URL as the gateway reaches it; each
	// trade's notify_url is NotifyBase + "/v1/payments/notify/{channel}".
	NotifyBase string
	// Timeout bounds each call on top of its ctx; zero means DefaultTimeout.
	Timeout time.Duration
	// HTTP is the client used; nil means http.DefaultClient.
	HTTP *http.Client
}

// String keeps the secret out of logs.
func (c Config) String() string {
	return fmt.Sprintf("gateway.Config{BaseURL:%s NotifyBase:%s}", c.BaseURL, c.NotifyBase)
}

// GoString is String, for %#v.
func (c Config) GoString() string { return c.String() }

// Client is the gateway's HTTP client; it implements channel.Provider and
// retries nothing itself: PayByProvider registers the trade again on the
// next pay request, the reconciler queries again on its next pass.
type Client struct {
	base       string
	secret     []byte
	notifyBase string
	timeout    time.Duration
	http       *http.Client
}

var _ channel.Provider = (*Client)(nil)

// New returns a client of the gateway at cfg.BaseURL.
func New(cfg Config) (*Client, error) {
	for name, v := range map[string]string{"gateway URL": cfg.BaseURL, "notify base URL": cfg.NotifyBase} {
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("gateway: the %s %q must be an http or https URL", name, v)
		}
	}
	if len(cfg.Secret) == 0 {
		return nil, errors.New("gateway: a secret is required")
	}
	c := &Client{base: strings.TrimSuffix(cfg.BaseURL, "/"), secret: cfg.Secret,
		notifyBase: strings.TrimSuffix(cfg.NotifyBase, "/"), timeout: cfg.Timeout, http: cfg.HTTP}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	if c.http == nil {
		c.http = http.DefaultClient
	}
	return c, nil
}

// NotifyURL is where the gateway notifies the outcome of a trade on channel.
func (c *Client) NotifyURL(ch string) string { return c.notifyBase + NotifyPath + ch }

// CreateTrade implements channel.Provider. The gateway is idempotent by trade
// number, so a trade registered before answers as it stands. An answer about
// another trade or amount is an error: the trade is not taken as registered.
func (c *Client) CreateTrade(ctx context.Context, t channel.Trade) error {
	body, err := json.Marshal(CreateRequest{TradeNo: t.TradeNo, Channel: t.Channel, Amount: money.Format(t.Amount),
		NotifyURL: c.NotifyURL(t.Channel)})
	if err != nil {
		return fmt.Errorf("gateway: create trade %s: %w", t.TradeNo, err)
	}
	status, reply, err := c.do(ctx, http.MethodPost, PathTrades, body, body)
	if err != nil {
		return fmt.Errorf("gateway: create trade %s: %w", t.TradeNo, err)
	}
	if status != http.StatusOK {
		return fmt.Errorf("gateway: create trade %s: %w", t.TradeNo, jsonreply.Unexpected(status, reply))
	}
	res, err := readReply(t.TradeNo, reply)
	if err != nil {
		return fmt.Errorf("gateway: create trade %s: %w", t.TradeNo, err)
	}
	if res.Amount != t.Amount {
		return fmt.Errorf("gateway: create trade %s: the gateway holds it for %s, not %s", t.TradeNo,
			money.Format(res.Amount), money.Format(t.Amount))
	}
	return nil
}

// QueryTrade implements channel.Provider. Only the gateway's own not_found
// answer wraps channel.ErrTradeUnknown (the reconciler then ends the trade):
// a bare 404 from a proxy or a wrong base URL must not end trades that may
// be paid. The amount is returned as the gateway states it; the engine
// compares it with the trade's.
func (c *Client) QueryTrade(ctx context.Context, tradeNo string) (channel.TradeResult, error) {
	if !ValidTradeNo(tradeNo) {
		return channel.TradeResult{}, fmt.Errorf("gateway: query trade %q: not a trade number", tradeNo)
	}
	path := TradePath(tradeNo)
	status, reply, err := c.do(ctx, http.MethodGet, path, nil, []byte(path))
	if err != nil {
		return channel.TradeResult{}, fmt.Errorf("gateway: query trade %s: %w", tradeNo, err)
	}
	switch {
	case status == http.StatusOK:
		res, err := readReply(tradeNo, reply)
		if err != nil {
			return channel.TradeResult{}, fmt.Errorf("gateway: query trade %s: %w", tradeNo, err)
		}
		return res, nil
	case status == http.StatusNotFound && jsonreply.Code(reply) == CodeNotFound:
		return channel.TradeResult{}, fmt.Errorf("gateway: query trade %s: %w", tradeNo, channel.ErrTradeUnknown)
	}
	return channel.TradeResult{}, fmt.Errorf("gateway: query trade %s: %w", tradeNo, jsonreply.Unexpected(status, reply))
}

// do sends one request signed over signed and returns the status and body
// of its answer. Errors name neither the secret nor the signature.
func (c *Client) do(ctx context.Context, method, path string, body, signed []byte) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set(HeaderSignature, Sign(c.secret, signed))
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	reply, err := io.ReadAll(io.LimitReader(resp.Body, maxReply))
	if err != nil {
		return 0, nil, fmt.Errorf("reading the %d answer: %w", resp.StatusCode, err)
	}
	return resp.StatusCode, reply, nil
}

// readReply reads a 200 answer about tradeNo; anything off is an error.
func readReply(tradeNo string, body []byte) (channel.TradeResult, error) {
	var rep TradeReply
	if err := json.Unmarshal(body, &rep); err != nil {
		return channel.TradeResult{}, jsonreply.Unexpected(http.StatusOK, body)
	}
	if rep.TradeNo != tradeNo {
		return channel.TradeResult{}, fmt.Errorf("the answer is about trade %q", rep.TradeNo)
	}
	fen, err := money.Parse(rep.Amount)
	if err != nil || fen <= 0 {
		return channel.TradeResult{}, jsonreply.Unexpected(http.StatusOK, body)
	}
	res := channel.TradeResult{Amount: fen, ProviderTxn: rep.ProviderTxn}
	switch rep.Status {
	case StatusPending:
		res.Outcome = channel.TradePending
	case StatusSuccess:
		res.Outcome = channel.TradeSucceeded
	case StatusFailed:
		res.Outcome = channel.TradeFailed
	default:
		return channel.TradeResult{}, jsonreply.Unexpected(http.StatusOK, body)
	}
	if len(rep.ProviderTxn) > 64 {
		return channel.TradeResult{}, fmt.Errorf("provider_txn is over 64 bytes")
	}
	return res, nil
}
