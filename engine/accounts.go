package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/grab-engine/grab/store"
)

// MaxDeposit bounds one deposit: 10,000,000.00.
const MaxDeposit int64 = 1_000_000_000

const maxRefLen = 64

// Deposit credits a user once per ref and returns the balance after it.
func (e *Engine) Deposit(ctx context.Context, userID, amount int64, ref string) (int64, error) {
	if userID <= 0 {
		return 0, fmt.Errorf("%w: bad user id", ErrInvalidArgument)
	}
	if amount <= 0 || amount > MaxDeposit {
		return 0, fmt.Errorf("%w: amount must be 0.01..%s", ErrInvalidArgument, FormatAmount(MaxDeposit))
	}
	if ref == "" || len(ref) > maxRefLen {
		return 0, fmt.Errorf("%w: ref must be 1..%d bytes", ErrInvalidArgument, maxRefLen)
	}
	balance, err := e.db.Deposit(ctx, userID, amount, ref, e.clock.Now().UTC())
	if errors.Is(err, store.ErrConflict) {
		return 0, fmt.Errorf("%w: ref %q was used for another deposit", ErrIdempotencyConflict, ref)
	}
	return balance, err
}

// Balance is a user's durable balance in fen.
func (e *Engine) Balance(ctx context.Context, userID int64) (int64, error) {
	return e.db.Balance(ctx, userID)
}

// SetGroupMembers replaces a group's members and returns how many it has.
// Packets already open keep the snapshot they took when they opened.
func (e *Engine) SetGroupMembers(ctx context.Context, groupID int64, userIDs []int64) (int, error) {
	if groupID <= 0 {
		return 0, fmt.Errorf("%w: bad group id", ErrInvalidArgument)
	}
	ids := slices.Clone(userIDs)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	if len(ids) > e.cfg.MaxGroupMembers {
		return 0, fmt.Errorf("%w: at most %d members", ErrInvalidArgument, e.cfg.MaxGroupMembers)
	}
	if len(ids) > 0 && ids[0] <= 0 {
		return 0, fmt.Errorf("%w: user ids must be positive", ErrInvalidArgument)
	}
	if err := e.db.SetGroupMembers(ctx, groupID, ids); err != nil {
		return 0, err
	}
	return len(ids), nil
}
