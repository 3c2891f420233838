package transfer

import (
	"context"
	"errors"
)

// Service is the external wallet service that pays campaign awards out to
// users; Client speaks its protocol. It is idempotent by out-trade-no: a
// number it has applied is never applied again, and asking again answers the
// first result. grab calls it outside any database transaction
// (docs/architecture.md, "Campaigns and payouts").
type Service interface {
	// Transfer applies t once. An error means the outcome is unknown (the
	// request failed, timed out, or its reply was lost): the caller must
	// query, or retry with the same OutTradeNo, before deciding anything.
	Transfer(ctx context.Context, t Transfer) (Result, error)
	// QueryTransfer reports what the service knows of outTradeNo; Unknown
	// when it never applied it.
	QueryTransfer(ctx context.Context, outTradeNo string) (Result, error)
}

// Transfer is one payout: Amount fen from the campaign's account to UserID.
type Transfer struct {
	OutTradeNo string
	UserID     int64
	Amount     int64 // fen
	Memo       string
}

// Outcome is what the service knows of one out-trade-no.
type Outcome int

const (
	// Unknown: the service has no record of the number; it was never applied.
	Unknown Outcome = iota
	// Succeeded: applied, now or by an earlier call.
	Succeeded
)

// Result answers Transfer and QueryTransfer.
type Result struct {
	Outcome    Outcome
	TransferID string // the service's id for the applied transfer
	Amount     int64  // fen, as the service applied it
	Duplicate  bool   // the number had been applied before this call
}

// ErrConflict: the service holds the out-trade-no with another user or
// amount. Never retried; the payout is parked for a person.
var ErrConflict = errors.New("transfer: the service holds this out-trade-no with other details")
