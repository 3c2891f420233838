package http

import (
	"context"
	"errors"
	"fmt"
	nethttp "net/http"
	"testing"

	"github.com/grab-engine/grab/engine/campaign"
	"github.com/grab-engine/grab/engine/channel"
	"github.com/grab-engine/grab/engine/transfer"

	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/engine/errs"
	"github.com/grab-engine/grab/engine/stock"
)

// Every API code has its status (docs/api.md).
func TestEveryCodeHasAStatus(t *testing.T) {
	for _, code := range errs.Codes() {
		if statusOf[code] == 0 {
			t.Errorf("%s has no HTTP status", code)
		}
	}
	if len(statusOf) != len(errs.Codes()) {
		t.Errorf("%d statuses for %d codes", len(statusOf), len(errs.Codes()))
	}
}

// Every sentinel the engine and its domains export answers its code and
// status, wrapped or not, with the detail and without the package prefix.
func TestSentinelAnswers(t *testing.T) {
	conflict := nethttp.StatusConflict
	for _, c := range []struct {
		err    error
		status int
		code   string
	}{
		{engine.ErrInvalidArgument, 400, "INVALID_ARGUMENT"},
		{engine.ErrForbidden, 403, "FORBIDDEN"},
		{engine.ErrNotFound, 404, "NOT_FOUND"},
		{engine.ErrInsufficientBalance, conflict, "INSUFFICIENT_BALANCE"},
		{engine.ErrNotPayable, conflict, "NOT_PAYABLE"},
		{engine.ErrNotOpen, conflict, "NOT_OPEN"},
		{engine.ErrSoldOut, conflict, "SOLD_OUT"},
		{engine.ErrExpired, 410, "EXPIRED"},
		{engine.ErrBusy, 503, "BUSY"},
		{engine.ErrIdempotencyConflict, conflict, "IDEMPOTENCY_CONFLICT"},
		{engine.ErrAmountMismatch, conflict, "AMOUNT_MISMATCH"},
		{engine.ErrAwardReceived, conflict, "AWARD_RECEIVED"},
		{engine.ErrPayoutInProgress, conflict, "PAYOUT_IN_PROGRESS"},
		{&campaign.PayoutPendingError{}, conflict, "PAYOUT_IN_PROGRESS"},
		{stock.ErrOutOfStock, conflict, "OUT_OF_STOCK"},
		{stock.ErrAlreadySubmitted, conflict, "ALREADY_SUBMITTED"},
		{stock.ErrNotForSale, conflict, "NOT_FOR_SALE"},
		{stock.ErrOrderClosed, conflict, "ORDER_CLOSED"},
		{stock.ErrTCCRefused, conflict, "TCC_REFUSED"},
		{stock.ErrRolledBack, conflict, "ROLLED_BACK"},
	} {
		for _, err := range []error{c.err, fmt.Errorf("%w: detail", c.err)} {
			ae, known := toAPIError(err)
			want := apiError{Status: c.status, Code: c.code, Message: err.Error()[len("engine: "):]}
			if !known || ae != want {
				t.Errorf("toAPIError(%q) = %+v, %v; want %+v", err, ae, known, want)
			}
		}
	}
}

// What is not a business outcome: a dependency that cannot serve is BUSY
// with a message naming none; anything else, and the engine's internal
// sentinels, are INTERNAL and unknown (logged).
func TestOutsideTheContract(t *testing.T) {
	busy := apiError{Status: 503, Code: "BUSY", Message: msgUnavailable}
	internal := apiError{Status: 500, Code: "INTERNAL", Message: "internal error"}
	for _, c := range []struct {
		err   error
		want  apiError
		known bool
	}{
		{fmt.Errorf("%w: %w", engine.ErrProviderUnavailable, errors.New("dial tcp: refused")), busy, true},
		{fmt.Errorf("%w: %w", engine.ErrProviderUnavailable, context.Canceled), internal, false},
		{errors.New("boom"), internal, false},
		{fmt.Errorf("query: %w", channel.ErrTradeUnknown), internal, false},
		{transfer.ErrConflict, internal, false},
		{errs.Errorf(errs.CodeUnauthenticated, "token expired"), apiError{Status: 401, Code: "UNAUTHENTICATED", Message: "token expired"}, true},
		{invalid("count must be at least %d", 1), apiError{Status: 400, Code: "INVALID_ARGUMENT", Message: "count must be at least 1"}, true},
	} {
		if ae, known := toAPIError(c.err); ae != c.want || known != c.known {
			t.Errorf("toAPIError(%q) = %+v, %v; want %+v, %v", c.err, ae, known, c.want, c.known)
		}
	}
}
