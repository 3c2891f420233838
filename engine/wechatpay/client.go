// Package wechatpay is the WeChat Pay API v3 channel, on the standard library
// only: requests signed WECHATPAY2-SHA256-RSA2048 with the merchant's API
// key, answers and notifications verified against the WeChat Pay platform
// certificates or the WeChat Pay public key (PUB_KEY_ID_…), notification
// resources decrypted with the APIv3 key (AEAD_AES_256_GCM).
//
// Client implements channel.Provider for APP payments: CreateTrade places the
// order (POST /v3/pay/transactions/app), CreateApp does the same and returns
// the signed parameters the app hands to the WeChat SDK, QueryTrade reads the
// order by out_trade_no, and VerifyNotification turns a payment notification
// into an channel.Notification.
package wechatpay

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/grab-engine/grab/engine/channel"
)

// DefaultBaseURL is WeChat Pay's API v3 host.
const DefaultBaseURL = "https://api.mch.weixin.qq.com"

// Paths of the API v3 calls the client makes.
const (
	PathAppOrder   = "/v3/pay/transactions/app"
	PathQueryByOut = "/v3/pay/transactions/out-trade-no/" // + out_trade_no + "?mchid=…"
)

// AuthSchema is the Authorization scheme of API v3 requests.
const AuthSchema = "WECHATPAY2-SHA256-RSA2048"

// Headers WeChat Pay signs its answers and notifications with.
const (
	HeaderTimestamp = "Wechatpay-Timestamp"
	HeaderNonce     = "Wechatpay-Nonce"
	HeaderSignature = "Wechatpay-Signature"
	HeaderSerial    = "Wechatpay-Serial"
	HeaderRequestID = "Request-ID"
)

// MaxClockSkew is how far a signed answer's or notification's timestamp may
// be from now.
const MaxClockSkew = 5 * time.Minute

// maxReply bounds what the client reads of an answer; real ones are small.
const maxReply = 256 << 10

// Errors a verification or a call wraps; none of them carries key material.
var (
	ErrBadSignature   = errors.New("wechatpay: signature does not verify")
	ErrUnknownSerial  = errors.New("wechatpay: unknown WeChat Pay key serial")
	ErrStaleTimestamp = errors.New("wechatpay: timestamp too far from now")
	ErrDecrypt        = errors.New("wechatpay: resource does not decrypt")
	ErrNotOurs        = errors.New("wechatpay: not for this merchant or app")
	ErrMalformed      = errors.New("wechatpay: malformed message")
)

// Config is what a Client needs. Exactly the merchant's own material signs;
// the platform certificates and/or the public key verify.
type Config struct {
	MchID  string // 商户号
	AppID  string // the app's AppID, bound to MchID
	Serial string // the merchant API certificate's serial number
	// PrivateKeyPEM is the merchant API private key (apiclient_key.pem,
	// PKCS#8 or PKCS#1 RSA).
	PrivateKeyPEM []byte
	// APIv3Key is the 32-byte APIv3 key that encrypts notification resources.
	APIv3Key []byte
	// PlatformCertsPEM holds WeChat Pay platform certificates (any number of
	// CERTIFICATE blocks), known by their serial numbers.
	PlatformCertsPEM []byte
	// PublicKeyPEM and PublicKeyID are the WeChat Pay public key (PUBLIC KEY
	// block) and its id, PUB_KEY_ID_…. Either or both of the two ways.
	PublicKeyPEM []byte
	PublicKeyID  string

	BaseURL   string // DefaultBaseURL when empty
	NotifyURL string // where WeChat Pay posts notifications; https in production
	// Description is the order's description shown to the payer; "grab red
	// packet" when empty.
	Description string
	Timeout     time.Duration // bound of one call on top of its ctx; zero leaves it to ctx
	HTTPClient  *http.Client  // http.DefaultClient when nil
	Now         func() time.Time
}

// String keeps keys out of logs: only the identifiers are shown.
func (c Config) String() string {
	return fmt.Sprintf("wechatpay.Config{MchID:%s AppID:%s Serial:%s PublicKeyID:%s BaseURL:%s NotifyURL:%s}",
		c.MchID, c.AppID, c.Serial, c.PublicKeyID, c.BaseURL, c.NotifyURL)
}

// GoString is String, for %#v.
func (c Config) GoString() string { return c.String() }

// Client is the WeChat Pay API v3 client. It implements channel.Provider.
type Client struct {
	mchID, appID, serial string
	key                  *rsa.PrivateKey
	apiV3Key             []byte
	verifiers            map[string]*rsa.PublicKey // serial or PUB_KEY_ID → key
	base, notifyURL      string
	description          string
	timeout              time.Duration
	http                 *http.Client
	now                  func() time.Time
}

var _ channel.Provider = (*Client)(nil)

// New checks cfg and returns a client.
func New(cfg Config) (*Client, error) {
	if cfg.MchID == "" || cfg.AppID == "" || cfg.Serial == "" {
		return nil, errors.New("wechatpay: mchid, appid and the merchant certificate serial are required")
	}
	if cfg.NotifyURL == "" {
		return nil, errors.New("wechatpay: notify URL is required")
	}
	if len(cfg.APIv3Key) != 32 {
		return nil, fmt.Errorf("wechatpay: the APIv3 key must be 32 bytes, it is %d", len(cfg.APIv3Key))
	}
	key, err := ParsePrivateKey(cfg.PrivateKeyPEM)
	if err != nil {
		return nil, err
	}
	verifiers := map[string]*rsa.PublicKey{}
	if len(cfg.PlatformCertsPEM) > 0 {
		certs, err := ParseCertificates(cfg.PlatformCertsPEM)
		if err != nil {
			return nil, err
		}
		for serial, k := range certs {
			verifiers[serial] = k
		}
	}
	if len(cfg.PublicKeyPEM) > 0 || cfg.PublicKeyID != "" {
		if !strings.HasPrefix(cfg.PublicKeyID, "PUB_KEY_ID_") {
			return nil, errors.New("wechatpay: the WeChat Pay public key needs its id, PUB_KEY_ID_…")
		}
		pub, err := ParsePublicKey(cfg.PublicKeyPEM)
		if err != nil {
			return nil, err
		}
		verifiers[cfg.PublicKeyID] = pub
	}
	if len(verifiers) == 0 {
		return nil, errors.New("wechatpay: a platform certificate or the WeChat Pay public key is required to verify")
	}
	base := cfg.BaseURL
	if base == "" {
		base = DefaultBaseURL
	}
	if u, err := url.Parse(base); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("wechatpay: base URL %q is not an http(s) URL", base)
	}
	c := &Client{mchID: cfg.MchID, appID: cfg.AppID, serial: cfg.Serial, key: key,
		apiV3Key: append([]byte(nil), cfg.APIv3Key...), verifiers: verifiers,
		base: strings.TrimSuffix(base, "/"), notifyURL: cfg.NotifyURL, description: cfg.Description,
		timeout: cfg.Timeout, http: cfg.HTTPClient, now: cfg.Now}
	if c.description == "" {
		c.description = "grab red packet"
	}
	if c.http == nil {
		c.http = http.DefaultClient
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c, nil
}

// ParsePrivateKey reads an RSA private key PEM (PKCS#8 or PKCS#1).
func ParsePrivateKey(pemBytes []byte) (*rsa.PrivateKey, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, errors.New("wechatpay: the merchant private key is not PEM")
	}
	if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		rk, ok := k.(*rsa.PrivateKey)
		if !ok {
			return nil, errors.New("wechatpay: the merchant private key is not RSA")
		}
		return rk, nil
	}
	k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
	if err != nil {
		return nil, errors.New("wechatpay: the merchant private key is neither PKCS#8 nor PKCS#1 RSA")
	}
	return k, nil
}

// ParsePublicKey reads the WeChat Pay public key PEM (PUBLIC KEY, PKIX).
func ParsePublicKey(pemBytes []byte) (*rsa.PublicKey, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, errors.New("wechatpay: the WeChat Pay public key is not PEM")
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("wechatpay: the WeChat Pay public key: %w", err)
	}
	rk, ok := k.(*rsa.PublicKey)
	if !ok {
		return nil, errors.New("wechatpay: the WeChat Pay public key is not RSA")
	}
	return rk, nil
}

// ParseCertificates reads platform certificates, each known by its serial
// number in upper-case hex as WeChat Pay writes it in Wechatpay-Serial.
func ParseCertificates(pemBytes []byte) (map[string]*rsa.PublicKey, error) {
	out := map[string]*rsa.PublicKey{}
	for rest := pemBytes; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("wechatpay: platform certificate: %w", err)
		}
		k, ok := cert.PublicKey.(*rsa.PublicKey)
		if !ok {
			return nil, errors.New("wechatpay: platform certificate key is not RSA")
		}
		out[CertSerial(cert)] = k
	}
	if len(out) == 0 {
		return nil, errors.New("wechatpay: no CERTIFICATE in the platform certificates PEM")
	}
	return out, nil
}

// CertSerial is a certificate's serial as WeChat Pay writes it: upper-case hex.
func CertSerial(cert *x509.Certificate) string {
	return strings.ToUpper(cert.SerialNumber.Text(16))
}

// nonce is 32 random characters, as WeChat Pay's nonce_str.
func nonce() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return strings.ToUpper(hex.EncodeToString(b[:]))
}

func (c *Client) sign(message string) (string, error) {
	sum := sha256.Sum256([]byte(message))
	sig, err := rsa.SignPKCS1v15(rand.Reader, c.key, crypto.SHA256, sum[:])
	if err != nil {
		return "", errors.New("wechatpay: signing failed")
	}
	return base64.StdEncoding.EncodeToString(sig), nil
}

// RequestMessage is what a request's signature covers: method, the URL's
// path and query, timestamp (Unix seconds), nonce and body, each line ended
// by "\n" (an empty body is an empty last line).
func RequestMessage(method, pathAndQuery string, timestamp int64, nonce string, body []byte) string {
	return method + "\n" + pathAndQuery + "\n" + strconv.FormatInt(timestamp, 10) + "\n" + nonce + "\n" + string(body) + "\n"
}

// ResponseMessage is what an answer's or notification's signature covers.
func ResponseMessage(timestamp, nonce string, body []byte) string {
	return timestamp + "\n" + nonce + "\n" + string(body) + "\n"
}

// authorization is the Authorization header of a request.
func (c *Client) authorization(method, pathAndQuery string, body []byte) (string, error) {
	ts, n := c.now().Unix(), nonce()
	sig, err := c.sign(RequestMessage(method, pathAndQuery, ts, n, body))
	if err != nil {
		return "", err
	}
	return fmt.Sprintf(`%s mchid="%s",nonce_str="%s",signature="%s",timestamp="%d",serial_no="%s"`,
		AuthSchema, c.mchID, n, sig, ts, c.serial), nil
}

// verify checks WeChat Pay's signature headers over body at now.
func (c *Client) verify(h http.Header, body []byte, now time.Time) error {
	ts, n, sig, serial := h.Get(HeaderTimestamp), h.Get(HeaderNonce), h.Get(HeaderSignature), h.Get(HeaderSerial)
	if ts == "" || n == "" || sig == "" || serial == "" {
		return fmt.Errorf("%w: missing Wechatpay-Timestamp/Nonce/Signature/Serial", ErrBadSignature)
	}
	pub, ok := c.verifiers[serial]
	if !ok {
		pub, ok = c.verifiers[strings.ToUpper(serial)]
	}
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownSerial, serial)
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: timestamp %q", ErrMalformed, ts)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > MaxClockSkew || d < -MaxClockSkew {
		return fmt.Errorf("%w: signed at %s, now %s", ErrStaleTimestamp, time.Unix(sec, 0).UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	// WeChat Pay probes merchants with deliberately wrong signatures so
	// prefixed; they must fail whatever they carry.
	if strings.HasPrefix(sig, "WECHATPAY/SIGNTEST/") {
		return fmt.Errorf("%w: a WeChat Pay signature probe", ErrBadSignature)
	}
	raw, err := base64.StdEncoding.DecodeString(sig)
	if err != nil {
		return fmt.Errorf("%w: signature is not base64", ErrBadSignature)
	}
	sum := sha256.Sum256([]byte(ResponseMessage(ts, n, body)))
	if rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], raw) != nil {
		return fmt.Errorf("%w (key %s)", ErrBadSignature, serial)
	}
	return nil
}

// APIError is WeChat Pay's error answer: {"code","message"}.
type APIError struct {
	Status    int
	Code      string
	Message   string
	RequestID string
}

func (e *APIError) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("wechatpay: HTTP %d (request %s)", e.Status, e.RequestID)
	}
	return fmt.Sprintf("wechatpay: HTTP %d %s: %s (request %s)", e.Status, e.Code, e.Message, e.RequestID)
}

// do sends one signed request and reads the answer. Answers are verified
// when 2xx; others are returned as *APIError, with verified reporting
// whether the error answer carried a valid signature.
func (c *Client) do(ctx context.Context, method, pathAndQuery string, body []byte) (status int, reply []byte, verified bool, err error) {
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+pathAndQuery, rd)
	if err != nil {
		return 0, nil, false, err
	}
	auth, err := c.authorization(method, req.URL.RequestURI(), body)
	if err != nil {
		return 0, nil, false, err
	}
	req.Header.Set("Authorization", auth)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "grab-wechatpay/1")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, false, err
	}
	defer resp.Body.Close()
	reply, err = io.ReadAll(io.LimitReader(resp.Body, maxReply))
	if err != nil {
		return 0, nil, false, fmt.Errorf("reading the answer: %w", err)
	}
	verr := c.verify(resp.Header, reply, c.now())
	if resp.StatusCode/100 == 2 {
		if verr != nil {
			return resp.StatusCode, nil, false, fmt.Errorf("answer refused: %w", verr)
		}
		return resp.StatusCode, reply, true, nil
	}
	apiErr := &APIError{Status: resp.StatusCode, RequestID: resp.Header.Get(HeaderRequestID)}
	var e struct{ Code, Message string }
	if json.Unmarshal(reply, &e) == nil {
		apiErr.Code, apiErr.Message = e.Code, e.Message
	}
	return resp.StatusCode, reply, verr == nil, apiErr
}

type appOrder struct {
	AppID       string `json:"appid"`
	MchID       string `json:"mchid"`
	Description string `json:"description"`
	OutTradeNo  string `json:"out_trade_no"`
	NotifyURL   string `json:"notify_url"`
	Amount      struct {
		Total    int64  `json:"total"`
		Currency string `json:"currency"`
	} `json:"amount"`
}

// AppPayParams are what the app passes to the WeChat SDK's PayReq to pay
// (field names as the SDK's JSON conventions write them).
type AppPayParams struct {
	AppID     string `json:"appid"`
	PartnerID string `json:"partnerid"`
	PrepayID  string `json:"prepayid"`
	Package   string `json:"package"`
	NonceStr  string `json:"noncestr"`
	Timestamp string `json:"timestamp"`
	Sign      string `json:"sign"`
}

// CreateTrade implements channel.Provider: it places the APP order. WeChat
// Pay answers the same out_trade_no with the same parameters again, so a
// repeat is harmless.
func (c *Client) CreateTrade(ctx context.Context, t channel.Trade) error {
	_, err := c.CreateApp(ctx, t)
	return err
}

// CreateApp places the APP order (idempotent per trade number, as
// CreateTrade) and returns the signed parameters the sender's app needs to
// pay it. The HTTP layer calls it after engine.PayByProvider to hand them to
// the app; a prepay_id is valid for two hours, so asking again is the way to
// get fresh ones.
func (c *Client) CreateApp(ctx context.Context, t channel.Trade) (AppPayParams, error) {
	if t.TradeNo == "" || t.Amount <= 0 {
		return AppPayParams{}, fmt.Errorf("wechatpay order %q: %w: a trade number and a positive amount are required", t.TradeNo, ErrMalformed)
	}
	o := appOrder{AppID: c.appID, MchID: c.mchID, Description: c.description, OutTradeNo: t.TradeNo, NotifyURL: c.notifyURL}
	o.Amount.Total, o.Amount.Currency = t.Amount, "CNY"
	body, err := json.Marshal(o)
	if err != nil {
		return AppPayParams{}, err
	}
	_, reply, _, err := c.do(ctx, http.MethodPost, PathAppOrder, body)
	if err != nil {
		return AppPayParams{}, fmt.Errorf("wechatpay order %s: %w", t.TradeNo, err)
	}
	var r struct {
		PrepayID string `json:"prepay_id"`
	}
	if err := json.Unmarshal(reply, &r); err != nil || r.PrepayID == "" {
		return AppPayParams{}, fmt.Errorf("wechatpay order %s: %w: no prepay_id in the answer", t.TradeNo, ErrMalformed)
	}
	return c.SignApp(r.PrepayID)
}

// StartTrade implements channel.AppPayer: it places the APP order (CreateApp)
// and returns the app's PayReq parameters under their JSON names (appid,
// partnerid, prepayid, package, noncestr, timestamp, sign).
func (c *Client) StartTrade(ctx context.Context, t channel.Trade) (map[string]string, error) {
	p, err := c.CreateApp(ctx, t)
	if err != nil {
		return nil, err
	}
	return map[string]string{"appid": p.AppID, "partnerid": p.PartnerID, "prepayid": p.PrepayID, "package": p.Package,
		"noncestr": p.NonceStr, "timestamp": p.Timestamp, "sign": p.Sign}, nil
}

// SignApp signs the app's pay parameters for a prepay_id: base64
// RSA-SHA256 over "appid\ntimestamp\nnoncestr\nprepay_id\n".
func (c *Client) SignApp(prepayID string) (AppPayParams, error) {
	p := AppPayParams{AppID: c.appID, PartnerID: c.mchID, PrepayID: prepayID, Package: "Sign=WXPay",
		NonceStr: nonce(), Timestamp: strconv.FormatInt(c.now().Unix(), 10)}
	sig, err := c.sign(AppSignMessage(p.AppID, p.Timestamp, p.NonceStr, p.PrepayID))
	if err != nil {
		return AppPayParams{}, err
	}
	p.Sign = sig
	return p, nil
}

// AppSignMessage is what the app pay parameters' sign covers.
func AppSignMessage(appID, timestamp, nonceStr, prepayID string) string {
	return appID + "\n" + timestamp + "\n" + nonceStr + "\n" + prepayID + "\n"
}

// Transaction is the part of WeChat Pay's transaction the client reads,
// in query answers and decrypted notifications alike.
type Transaction struct {
	AppID         string `json:"appid"`
	MchID         string `json:"mchid"`
	OutTradeNo    string `json:"out_trade_no"`
	TransactionID string `json:"transaction_id"`
	TradeType     string `json:"trade_type,omitempty"`
	TradeState    string `json:"trade_state"`
	TradeStateDsc string `json:"trade_state_desc,omitempty"`
	SuccessTime   string `json:"success_time,omitempty"`
	Amount        struct {
		Total         int64  `json:"total"`
		PayerTotal    int64  `json:"payer_total,omitempty"`
		Currency      string `json:"currency,omitempty"`
		PayerCurrency string `json:"payer_currency,omitempty"`
	} `json:"amount"`
}

// Trade states.
const (
	StateSuccess    = "SUCCESS"
	StateRefund     = "REFUND"
	StateNotPay     = "NOTPAY"
	StateUserPaying = "USERPAYING"
	StateClosed     = "CLOSED"
	StatePayError   = "PAYERROR"
	StateRevoked    = "REVOKED"
)

// Outcome maps a trade_state: SUCCESS succeeded, NOTPAY/USERPAYING pending,
// CLOSED/PAYERROR/REVOKED failed, and REFUND failed too: grab never refunds
// through WeChat Pay, so a trade refunded before grab saw it succeed had its
// money sent back by hand, and the packet must not open on it (after a
// success it is a failure after success: nothing moves, a person looks).
func Outcome(state string) (channel.TradeOutcome, error) {
	switch state {
	case StateSuccess:
		return channel.TradeSucceeded, nil
	case StateNotPay, StateUserPaying:
		return channel.TradePending, nil
	case StateClosed, StatePayError, StateRevoked, StateRefund:
		return channel.TradeFailed, nil
	}
	return 0, fmt.Errorf("%w: trade_state %q", ErrMalformed, state)
}

// checkOurs refuses a transaction for another merchant, app or trade.
func (c *Client) checkOurs(t Transaction, tradeNo string) error {
	if t.MchID != c.mchID || t.AppID != c.appID {
		return fmt.Errorf("%w: mchid %q appid %q", ErrNotOurs, t.MchID, t.AppID)
	}
	if tradeNo != "" && t.OutTradeNo != tradeNo {
		return fmt.Errorf("%w: answer is for trade %q", ErrNotOurs, t.OutTradeNo)
	}
	return nil
}

// QueryTrade implements channel.Provider. Only WeChat Pay's own, signed
// ORDER_NOT_EXIST (or RESOURCE_NOT_EXISTS) 404 wraps channel.ErrTradeUnknown:
// an unsigned 404 from a proxy must not end a paid trade as failed.
func (c *Client) QueryTrade(ctx context.Context, tradeNo string) (channel.TradeResult, error) {
	path := PathQueryByOut + url.PathEscape(tradeNo) + "?mchid=" + url.QueryEscape(c.mchID)
	status, reply, verified, err := c.do(ctx, http.MethodGet, path, nil)
	var apiErr *APIError
	if errors.As(err, &apiErr) && status == http.StatusNotFound &&
		(apiErr.Code == "ORDER_NOT_EXIST" || apiErr.Code == "RESOURCE_NOT_EXISTS") {
		if !verified {
			return channel.TradeResult{}, fmt.Errorf("wechatpay query %s: %w: a not-found answer that does not verify", tradeNo, ErrBadSignature)
		}
		return channel.TradeResult{}, fmt.Errorf("wechatpay query %s: %w (%s)", tradeNo, channel.ErrTradeUnknown, apiErr.Code)
	}
	if err != nil {
		return channel.TradeResult{}, fmt.Errorf("wechatpay query %s: %w", tradeNo, err)
	}
	var t Transaction
	if err := json.Unmarshal(reply, &t); err != nil {
		return channel.TradeResult{}, fmt.Errorf("wechatpay query %s: %w: %v", tradeNo, ErrMalformed, err)
	}
	if err := c.checkOurs(t, tradeNo); err != nil {
		return channel.TradeResult{}, fmt.Errorf("wechatpay query %s: %w", tradeNo, err)
	}
	out, err := Outcome(t.TradeState)
	if err != nil {
		return channel.TradeResult{}, fmt.Errorf("wechatpay query %s: %w", tradeNo, err)
	}
	return channel.TradeResult{Outcome: out, Amount: t.Amount.Total, ProviderTxn: t.TransactionID}, nil
}
