package errs_test

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/grab-engine/grab/engine/errs"
)

// sentinels is every sentinel with the code it must carry.
var sentinels = []struct {
	err  error
	code string
}{
	{errs.ErrInvalidArgument, "INVALID_ARGUMENT"},
	{errs.ErrNotFound, "NOT_FOUND"},
	{errs.ErrForbidden, "FORBIDDEN"},
	{errs.ErrBusy, "BUSY"},
	{errs.ErrIdempotencyConflict, "IDEMPOTENCY_CONFLICT"},
	{errs.ErrInsufficientBalance, "INSUFFICIENT_BALANCE"},
	{errs.ErrNotPayable, "NOT_PAYABLE"},
	{errs.ErrNotOpen, "NOT_OPEN"},
	{errs.ErrSoldOut, "SOLD_OUT"},
	{errs.ErrExpired, "EXPIRED"},
	{errs.ErrAmountMismatch, "AMOUNT_MISMATCH"},
	{errs.ErrProviderUnavailable, "BUSY"},
	{errs.ErrAwardReceived, "AWARD_RECEIVED"},
	{errs.ErrPayoutInProgress, "PAYOUT_IN_PROGRESS"},
	{errs.ErrOutOfStock, "OUT_OF_STOCK"},
	{errs.ErrAlreadySubmitted, "ALREADY_SUBMITTED"},
	{errs.ErrNotForSale, "NOT_FOR_SALE"},
	{errs.ErrOrderClosed, "ORDER_CLOSED"},
	{errs.ErrTCCRefused, "TCC_REFUSED"},
	{errs.ErrRolledBack, "ROLLED_BACK"},
}

// Every sentinel carries its API code, bare and wrapped once or twice, and
// stays itself for errors.Is.
func TestSentinelCodes(t *testing.T) {
	for _, s := range sentinels {
		if !slices.Contains(errs.Codes(), s.code) {
			t.Errorf("%v: code %s is not in Codes", s.err, s.code)
		}
		wrapped := fmt.Errorf("%w: sku 7", s.err)
		twice := fmt.Errorf("deduct: %w", wrapped)
		for _, err := range []error{s.err, wrapped, twice} {
			if got := errs.ErrorCode(err); got != s.code {
				t.Errorf("ErrorCode(%q) = %s, want %s", err, got, s.code)
			}
			if !errors.Is(err, s.err) {
				t.Errorf("errors.Is(%q, its sentinel) = false", err)
			}
		}
		if wrapped.Error() != s.err.Error()+": sku 7" {
			t.Errorf("wrapped text %q", wrapped)
		}
	}
}

// Sentinels sharing a code are still distinct errors.
func TestSentinelsAreDistinct(t *testing.T) {
	if errors.Is(errs.ErrProviderUnavailable, errs.ErrBusy) || errors.Is(errs.ErrBusy, errs.ErrProviderUnavailable) {
		t.Fatal("ErrProviderUnavailable and ErrBusy share BUSY but must not be the same error")
	}
}

// No error has no code; an error without one is INTERNAL; a new Error
// carries what it was given.
func TestErrorCode(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{nil, ""},
		{errors.New("boom"), "INTERNAL"},
		{fmt.Errorf("load: %w", errors.New("boom")), "INTERNAL"},
		{errs.Errorf(errs.CodeUnauthenticated, "token %s", "expired"), "UNAUTHENTICATED"},
		{fmt.Errorf("auth: %w", errs.New(errs.CodeForbidden, "not admin")), "FORBIDDEN"},
		// The outermost code wins: a wrapper that knows better names it.
		{fmt.Errorf("%w: %w", errs.ErrNotFound, errs.ErrBusy), "NOT_FOUND"},
	} {
		if got := errs.ErrorCode(c.err); got != c.want {
			t.Errorf("ErrorCode(%v) = %q, want %q", c.err, got, c.want)
		}
	}
	if e := errs.Errorf(errs.CodeNotFound, "no channel %q", "x"); e.Error() != `no channel "x"` || e.Code != "NOT_FOUND" {
		t.Fatalf("Errorf = %+v", e)
	}
}

// Codes lists each code once.
func TestCodesUnique(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range errs.Codes() {
		if seen[c] {
			t.Errorf("%s twice", c)
		}
		seen[c] = true
	}
	if len(seen) != 23 {
		t.Fatalf("%d codes, want the 23 of docs/api.md", len(seen))
	}
}
