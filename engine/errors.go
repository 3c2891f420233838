package engine

import (
	"context"
	"errors"

	"github.com/grab-engine/grab/engine/errs"
	"github.com/grab-engine/grab/lua"
	"github.com/grab-engine/grab/store"
)

// Sentinel errors, defined with their API codes in package errs; wrap them
// with fmt.Errorf("%w: detail", ...) to say what exactly was wrong.
var (
	ErrInvalidArgument     = errs.ErrInvalidArgument
	ErrForbidden           = errs.ErrForbidden
	ErrNotFound            = errs.ErrNotFound
	ErrInsufficientBalance = errs.ErrInsufficientBalance
	ErrNotPayable          = errs.ErrNotPayable
	ErrNotOpen             = errs.ErrNotOpen
	ErrSoldOut             = errs.ErrSoldOut
	ErrExpired             = errs.ErrExpired
	ErrBusy                = errs.ErrBusy
	ErrIdempotencyConflict = errs.ErrIdempotencyConflict
	ErrAwardReceived       = errs.ErrAwardReceived
	ErrPayoutInProgress    = errs.ErrPayoutInProgress
	ErrAmountMismatch      = errs.ErrAmountMismatch
	ErrProviderUnavailable = errs.ErrProviderUnavailable
)

// ErrorCode is err's API code (errs.ErrorCode): "" for nil, the code of its
// sentinel, errs.CodeBusy when the engine cannot serve now (Unavailable),
// and errs.CodeInternal for anything else. A deadline that passed is BUSY
// (the engine or a dependency was too slow: the client retries); a context
// the caller cancelled is not unavailability, so it stays INTERNAL.
func ErrorCode(err error) string {
	code := errs.ErrorCode(err)
	switch {
	case code == errs.CodeInternal && Unavailable(err):
		return errs.CodeBusy
	case code == errs.CodeBusy && !Unavailable(err):
		return errs.CodeInternal // a caller that cancelled is not unavailability
	}
	return code
}

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
