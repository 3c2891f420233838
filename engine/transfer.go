package engine

import (
	"context"

	"github.com/grab-engine/grab/engine/errs"
)

// TransferService is the external wallet service that pays campaign awards
// out to users. It is idempotent by out-trade-no: a number it has applied is
// never applied again, and asking again answers the first result. grab calls
// it outside any database transaction (docs/architecture.md, "Campaigns and payouts").
type TransferService interface {
	// Transfer applies t once. An error means the outcome is unknown (the
	// request failed, timed out, or its reply was lost): the caller must
	// query, or retry with the same OutTradeNo, before deciding anything.
	Transfer(ctx context.Context, t Transfer) (TransferResult, error)
	// QueryTransfer reports what the service knows of outTradeNo;
	// TransferUnknown when it never applied it.
	QueryTransfer(ctx context.Context, outTradeNo string) (TransferResult, error)
}

// Transfer is one payout: Amount fen from the campaign's account to UserID.
type Transfer struct {
	OutTradeNo string
	UserID     int64
	Amount     int64 // fen
	Memo       string
}

// TransferOutcome is what the service knows of one out-trade-no.
type TransferOutcome int

const (
	// TransferUnknown: the service has no record of the number; it was never applied.
	TransferUnknown TransferOutcome = iota
	// TransferSucceeded: applied, now or by an earlier call.
	TransferSucceeded
)

// TransferResult answers Transfer and QueryTransfer.
type TransferResult struct {
	Outcome    TransferOutcome
	TransferID string // the service's id for the applied transfer
	Amount     int64  // fen, as the service applied it
	Duplicate  bool   // the number had been applied before this call
}

// ErrTransferConflict: the service holds the out-trade-no with another user or
// amount. Never retried; the payout is parked for a person (INTERNAL, were it
// ever to reach a client).
var ErrTransferConflict error = errs.New(errs.CodeInternal, "engine: transfer service holds this out-trade-no with other details")
