// Package transfer is the contract with the wallet service that pays
// campaign awards out (Service, Transfer, Result; no Redis or MySQL), its
// HTTP client (Client) and the wire protocol they speak.
//
// The simulator lives apart, in engine/transfersim, and serves this
// package's protocol code: production code imports only the client, and the
// simulator cannot drift from what the client sends and expects.
//
// # Protocol
//
// JSON over HTTP. Amounts are yuan as decimal strings with exactly two
// fraction digits ("1.23"), never JSON numbers.
//
//	POST {base}/v1/transfers
//	    {"out_trade_no":"award-7-42","user_id":42,"amount":"1.23","memo":"campaign 7"}
//	200 {"out_trade_no":"award-7-42","status":"succeeded","transfer_id":"T0000000001",
//	     "user_id":42,"amount":"1.23","duplicate":false}
//	    A number already applied answers its first result with "duplicate":true
//	    and moves no money again.
//	409 {"error":"conflict"}: the number is held with another user or amount.
//
//	GET {base}/v1/transfers/{out_trade_no}
//	200 the same object, "duplicate":false
//	404 {"error":"not_found"}: the number was never applied.
//
// Other answers: 400 {"error":"malformed", ...} for a request the service
// cannot read; 401 {"error":"unauthorized"} for a bad signature or a stale
// timestamp; 5xx when the service failed. After a 5xx, a timeout or a
// dropped connection the transfer may or may not have been applied: the
// caller queries, or retries with the same number.
//
// An out-trade-no is 1 to 64 of [0-9A-Za-z_-]; a user id is positive; an
// amount is from "0.01" to "9999999999.99"; a memo is at most 256 bytes.
//
// Every request carries X-Grab-Timestamp, unix seconds, and
// X-Grab-Signature, the lowercase hex HMAC-SHA256 under the shared secret of
//
//	method "\n" path "\n" timestamp "\n" body
//
// where path is the request's escaped path as sent (no query) and body is
// empty for GET. The service refuses a timestamp more than five minutes
// from its own clock, so a captured request cannot be replayed later.
package transfer

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"time"

	"github.com/grab-engine/grab/engine/money"
)

// Paths and headers of the protocol.
const (
	PathTransfers   = "/v1/transfers"
	HeaderTimestamp = "X-Grab-Timestamp"
	HeaderSignature = "X-Grab-Signature"
	// MaxSkew is how far a request's timestamp may be from the service's clock.
	MaxSkew = 5 * time.Minute
	// StatusSucceeded is the only status an applied transfer has.
	StatusSucceeded = "succeeded"
	// Error codes in {"error": ...} bodies.
	CodeConflict     = "conflict"
	CodeNotFound     = "not_found"
	CodeMalformed    = "malformed"
	CodeUnauthorized = "unauthorized"
	CodeUnavailable  = "unavailable"
)

// Errors of VerifyRequest and of reading a request.
var (
	ErrBadSignature = errors.New("transfer: bad signature")
	ErrStale        = errors.New("transfer: timestamp too far from now")
	ErrMalformed    = errors.New("transfer: malformed request")
)

// Request is the body of POST /v1/transfers.
type Request struct {
	OutTradeNo string `json:"out_trade_no"`
	UserID     int64  `json:"user_id"`
	Amount     string `json:"amount"`
	Memo       string `json:"memo,omitempty"`
}

// Reply is the 200 body of both calls.
type Reply struct {
	OutTradeNo string `json:"out_trade_no"`
	Status     string `json:"status"`
	TransferID string `json:"transfer_id"`
	UserID     int64  `json:"user_id"`
	Amount     string `json:"amount"`
	Duplicate  bool   `json:"duplicate"`
}

// ErrorReply is the body of every answer but 200.
type ErrorReply struct {
	Error  string `json:"error"`
	Detail string `json:"detail,omitempty"`
}

// NewRequest puts t on the wire.
func NewRequest(t Transfer) Request {
	return Request{OutTradeNo: t.OutTradeNo, UserID: t.UserID, Amount: money.Format(t.Amount), Memo: t.Memo}
}

// Transfer checks r and returns it in fen; errors wrap ErrMalformed.
func (r Request) Transfer() (Transfer, error) {
	if !ValidOutTradeNo(r.OutTradeNo) {
		return Transfer{}, fmt.Errorf("%w: out_trade_no %q must be 1 to 64 of [0-9A-Za-z_-]", ErrMalformed, r.OutTradeNo)
	}
	if r.UserID <= 0 {
		return Transfer{}, fmt.Errorf("%w: user_id must be positive", ErrMalformed)
	}
	fen, err := ParseAmount(r.Amount)
	if err != nil {
		return Transfer{}, err
	}
	if fen <= 0 {
		return Transfer{}, fmt.Errorf("%w: amount must be positive", ErrMalformed)
	}
	if len(r.Memo) > 256 {
		return Transfer{}, fmt.Errorf("%w: memo is longer than 256 bytes", ErrMalformed)
	}
	return Transfer{OutTradeNo: r.OutTradeNo, UserID: r.UserID, Amount: fen, Memo: r.Memo}, nil
}

// NewReply is the answer for an applied transfer.
func NewReply(t Transfer, transferID string, duplicate bool) Reply {
	return Reply{OutTradeNo: t.OutTradeNo, Status: StatusSucceeded, TransferID: transferID,
		UserID: t.UserID, Amount: money.Format(t.Amount), Duplicate: duplicate}
}

var outTradeNoPattern = regexp.MustCompile(`^[0-9A-Za-z_-]{1,64}$`)

// ValidOutTradeNo reports whether s may be an out-trade-no; such a number
// needs no escaping in a path.
func ValidOutTradeNo(s string) bool { return outTradeNoPattern.MatchString(s) }

// Exactly two fraction digits: the wire has one spelling per amount, so a
// signature or a log line never differs for the same money. The bound is
// money.Parse's.
var amountPattern = regexp.MustCompile(`^(0|[1-9][0-9]{0,9})\.[0-9]{2}$`)

// ParseAmount reads a wire amount ("1.23") into fen. Signs, exponents,
// leading zeros and any other number of fraction digits are malformed.
func ParseAmount(s string) (int64, error) {
	if !amountPattern.MatchString(s) {
		return 0, fmt.Errorf("%w: amount %q must be a decimal string with two fraction digits", ErrMalformed, s)
	}
	fen, err := money.Parse(s)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return fen, nil
}

// SignRequest stamps r, whose body is body, with now and its signature.
func SignRequest(secret []byte, r *http.Request, body []byte, now time.Time) {
	ts := strconv.FormatInt(now.Unix(), 10)
	r.Header.Set(HeaderTimestamp, ts)
	r.Header.Set(HeaderSignature, signature(secret, r.Method, r.URL.EscapedPath(), ts, body))
}

// VerifyRequest checks r's signature over body, and its timestamp against now.
func VerifyRequest(secret []byte, r *http.Request, body []byte, now time.Time) error {
	ts := r.Header.Get(HeaderTimestamp)
	got, err := hex.DecodeString(r.Header.Get(HeaderSignature))
	if err != nil || ts == "" {
		return ErrBadSignature
	}
	want, _ := hex.DecodeString(signature(secret, r.Method, r.URL.EscapedPath(), ts, body))
	if !hmac.Equal(got, want) {
		return ErrBadSignature
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return ErrBadSignature
	}
	if skew := now.Sub(time.Unix(sec, 0)); skew > MaxSkew || skew < -MaxSkew {
		return ErrStale
	}
	return nil
}

func signature(secret []byte, method, path, ts string, body []byte) string {
	m := hmac.New(sha256.New, secret)
	fmt.Fprintf(m, "%s\n%s\n%s\n", method, path, ts)
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}
