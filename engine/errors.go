package engine

import (
	"context"
	"errors"

	"github.com/grab-engine/grab/engine/errs"
	"github.com/grab-engine/grab/lua"
	"github.com/grab-engine/grab/store"
)

// Sentinel errors. The HTTP layer maps each to one API code; wrap them with
// fmt.Errorf("%w: detail", ...) to say what exactly was wrong.
var (
	ErrInvalidArgument     = errs.ErrInvalidArgument
	ErrForbidden           = errors.New("engine: forbidden")
	ErrNotFound            = errs.ErrNotFound
	ErrInsufficientBalance = errors.New("engine: insufficient balance")
	ErrNotPayable          = errors.New("engine: packet is not payable")
	ErrNotOpen             = errors.New("engine: packet is not open")
	ErrSoldOut             = errors.New("engine: sold out")
	ErrExpired             = errors.New("engine: packet expired")
	ErrBusy                = errs.ErrBusy
	ErrIdempotencyConflict = errs.ErrIdempotencyConflict
)

// Campaign payouts have their own codes, so the app can tell a user whose
// award is already paid (the payout's status 3, docs/glossary.md) from one whose transfer is
// under way (status 7).
var (
	ErrAwardReceived    = errors.New("engine: award already received")
	ErrPayoutInProgress = errors.New("engine: payout in progress; it completes by itself")
)

// ErrAmountMismatch: a payment notification's amount differs from its trade's.
var ErrAmountMismatch = errors.New("engine: amount does not match the trade")

// ErrProviderUnavailable: a payment channel did not take or answer a call
// (down, timed out, refused it); the sender asks to pay again, which is
// idempotent by the trade.
var ErrProviderUnavailable = errors.New("engine: the payment channel is unavailable")

// Unavailable reports whether err means the engine cannot serve the call now
// but may in a moment: it sheds load (ErrBusy), Redis is unreachable,
// restarting, loading its dataset or failing over (lua.Unavailable), a
// payment channel did not answer (ErrProviderUnavailable), or the
// store is down, read-only or out of connections (store.Transient). The API
// answers such an error BUSY (503) with Retry-After, never INTERNAL: the
// client retries the same call, which every mutating call makes safe by its
// idempotency id. A context the caller cancelled is not unavailability.
func Unavailable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	return errors.Is(err, ErrBusy) || errors.Is(err, ErrProviderUnavailable) || lua.Unavailable(err) || store.Transient(err)
}

// FromStore turns the store's ErrNotFound into ErrNotFound, so a row that is
// not there answers NOT_FOUND; other errors pass as they are.
func FromStore(err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return ErrNotFound
	}
	return err
}
