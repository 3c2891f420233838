// Package errs holds the API error codes (docs/api.md), the Error that
// carries one, and the sentinel errors of every domain of the engine
// (packets, campaigns, stock), each defined with its code. The engine and its
// domain packages return the sentinels wrapped with
// fmt.Errorf("%w: detail", ...); callers test them with errors.Is and read
// the code with ErrorCode. Package engine and engine/stock re-export them
// under the same names; the HTTP layer maps each code to one status
// (http/errors.go).
package errs

import (
	"errors"
	"fmt"
)

// API error codes (docs/api.md), the strings clients see.
const (
	CodeInvalidArgument     = "INVALID_ARGUMENT"
	CodeUnauthenticated     = "UNAUTHENTICATED"
	CodeForbidden           = "FORBIDDEN"
	CodeNotFound            = "NOT_FOUND"
	CodeInsufficientBalance = "INSUFFICIENT_BALANCE"
	CodeNotPayable          = "NOT_PAYABLE"
	CodeNotOpen             = "NOT_OPEN"
	CodeSoldOut             = "SOLD_OUT"
	CodeExpired             = "EXPIRED"
	// CodeBusy: the client retries the same call (load shed, or a
	// dependency that cannot serve now).
	CodeBusy = "BUSY"
	// CodeInternal is every error without a code of its own: a bug or an
	// outage to log, never a business outcome.
	CodeInternal = "INTERNAL"

	CodeIdempotencyConflict = "IDEMPOTENCY_CONFLICT"
	CodePayloadTooLarge     = "PAYLOAD_TOO_LARGE"
	CodeMethodNotAllowed    = "METHOD_NOT_ALLOWED"
	CodeAmountMismatch      = "AMOUNT_MISMATCH"

	// Stock (docs/api.md "Stock (activity SKUs)").
	CodeOutOfStock       = "OUT_OF_STOCK"
	CodeAlreadySubmitted = "ALREADY_SUBMITTED"
	CodeNotForSale       = "NOT_FOR_SALE"
	CodeOrderClosed      = "ORDER_CLOSED"
	CodeTCCRefused       = "TCC_REFUSED"
	CodeRolledBack       = "ROLLED_BACK"

	// Campaign payouts: status 3 (already received) and 7 (transferring)
	// each have their own code, so the app can say the right thing
	// (docs/glossary.md).
	CodeAwardReceived    = "AWARD_RECEIVED"
	CodePayoutInProgress = "PAYOUT_IN_PROGRESS"
)

// Codes is every API code, in the order above.
func Codes() []string {
	return []string{CodeInvalidArgument, CodeUnauthenticated, CodeForbidden, CodeNotFound, CodeInsufficientBalance,
		CodeNotPayable, CodeNotOpen, CodeSoldOut, CodeExpired, CodeBusy, CodeInternal, CodeIdempotencyConflict,
		CodePayloadTooLarge, CodeMethodNotAllowed, CodeAmountMismatch, CodeOutOfStock, CodeAlreadySubmitted,
		CodeNotForSale, CodeOrderClosed, CodeTCCRefused, CodeRolledBack, CodeAwardReceived, CodePayoutInProgress}
}

// Error is an error with its API code. Message is written for people; the
// engine's sentinels start it with "engine: ", which the API drops.
type Error struct {
	Code    string
	Message string
}

// Error implements error: the message alone, so wrapping keeps the text
// callers have always seen.
func (e *Error) Error() string { return e.Message }

// New is an error with code and message.
func New(code, message string) *Error { return &Error{Code: code, Message: message} }

// Errorf is an error with code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return New(code, fmt.Sprintf(format, args...))
}

// ErrorCode is the code of the first *Error in err's chain: "" for nil, and
// CodeInternal for an error that carries none. engine.ErrorCode adds what
// needs the engine's knowledge (a Redis or store outage is CodeBusy).
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}

// Sentinels every domain shares.
var (
	ErrInvalidArgument error = New(CodeInvalidArgument, "engine: invalid argument")
	ErrNotFound        error = New(CodeNotFound, "engine: not found")
	ErrForbidden       error = New(CodeForbidden, "engine: forbidden")
	// ErrBusy: the engine sheds load (the writer's lag is over its bound,
	// or a state is being loaded); the client retries the same call.
	ErrBusy                error = New(CodeBusy, "engine: busy, writer lag over its bound")
	ErrIdempotencyConflict error = New(CodeIdempotencyConflict, "engine: idempotency key reused with different content")
)

// Packets and payments.
var (
	ErrInsufficientBalance error = New(CodeInsufficientBalance, "engine: insufficient balance")
	ErrNotPayable          error = New(CodeNotPayable, "engine: packet is not payable")
	ErrNotOpen             error = New(CodeNotOpen, "engine: packet is not open")
	ErrSoldOut             error = New(CodeSoldOut, "engine: sold out")
	ErrExpired             error = New(CodeExpired, "engine: packet expired")
	// ErrAmountMismatch: a payment notification's amount differs from its trade's.
	ErrAmountMismatch error = New(CodeAmountMismatch, "engine: amount does not match the trade")
	// ErrProviderUnavailable: a payment channel did not take or answer a
	// call (down, timed out, refused it); the sender asks to pay again,
	// which is idempotent by the trade.
	ErrProviderUnavailable error = New(CodeBusy, "engine: the payment channel is unavailable")
)

// Campaign payouts have their own codes, so the app can tell a user whose
// award is already paid (the payout's status 3, docs/glossary.md) from one
// whose transfer is under way (status 7).
var (
	ErrAwardReceived    error = New(CodeAwardReceived, "engine: award already paid out")
	ErrPayoutInProgress error = New(CodePayoutInProgress, "engine: payout in progress; it completes by itself")
)

// Stock.
var (
	ErrOutOfStock       error = New(CodeOutOfStock, "engine: out of stock")
	ErrAlreadySubmitted error = New(CodeAlreadySubmitted, "engine: SKU already submitted")
	ErrNotForSale       error = New(CodeNotForSale, "engine: not for sale")
	ErrOrderClosed      error = New(CodeOrderClosed, "engine: order already returned or cancelled")
	// ErrTCCRefused: a try after its branch was cancelled (no hanging
	// reservation) or ended.
	ErrTCCRefused error = New(CodeTCCRefused, "engine: TCC branch refused")
	// ErrRolledBack: the voucher was rolled back; its operation cannot run now.
	ErrRolledBack error = New(CodeRolledBack, "engine: voucher rolled back")
)
