// Package errs holds the sentinel errors every domain of the engine shares
// (packets, campaigns, stock). The engine and its domain packages return
// them, wrapped with fmt.Errorf("%w: detail", ...); the HTTP layer maps each
// to one API code (http/errors.go). Package engine re-exports them under
// the same names.
package errs

import "errors"

var (
	ErrInvalidArgument = errors.New("engine: invalid argument")
	ErrNotFound        = errors.New("engine: not found")
	// ErrBusy: the engine sheds load (the writer's lag is over its bound,
	// or a state is being loaded); the client retries the same call.
	ErrBusy                = errors.New("engine: busy, writer lag over its bound")
	ErrIdempotencyConflict = errors.New("engine: idempotency key reused with different content")
)
