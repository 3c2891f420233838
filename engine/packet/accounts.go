package packet

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/engine/money"
	"github.com/grab-engine/grab/store"
)

// MaxDeposit bounds one deposit: 10,000,000.00.
const MaxDeposit int64 = 1_000_000_000

const maxRefLen = 64

// Deposit credits a user once per ref and returns the balance after it.
func (s *Service) Deposit(ctx context.Context, userID, amount int64, ref string) (int64, error) {
	if userID <= 0 {
		return 0, fmt.Errorf("%w: bad user id", engine.ErrInvalidArgument)
	}
	if amount <= 0 || amount > MaxDeposit {
		return 0, fmt.Errorf("%w: amount must be 0.01..%s", engine.ErrInvalidArgument, money.Format(MaxDeposit))
	}
	if ref == "" || len(ref) > maxRefLen {
		return 0, fmt.Errorf("%w: ref must be 1..%d bytes", engine.ErrInvalidArgument, maxRefLen)
	}
	balance, err := s.db.Deposit(ctx, userID, amount, ref, s.clock.Now().UTC())
	if errors.Is(err, store.ErrConflict) {
		return 0, fmt.Errorf("%w: ref %q was used for another deposit", engine.ErrIdempotencyConflict, ref)
	}
	return balance, err
}

// Balance is a user's durable balance in fen.
func (s *Service) Balance(ctx context.Context, userID int64) (int64, error) {
	return s.db.Balance(ctx, userID)
}

// SetGroupMembers replaces a group's members and returns how many it has.
// Packets already open keep the snapshot they took when they opened.
func (s *Service) SetGroupMembers(ctx context.Context, groupID int64, userIDs []int64) (int, error) {
	if groupID <= 0 {
		return 0, fmt.Errorf("%w: bad group id", engine.ErrInvalidArgument)
	}
	ids := slices.Clone(userIDs)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	if len(ids) > s.cfg.MaxGroupMembers {
		return 0, fmt.Errorf("%w: at most %d members", engine.ErrInvalidArgument, s.cfg.MaxGroupMembers)
	}
	if len(ids) > 0 && ids[0] <= 0 {
		return 0, fmt.Errorf("%w: user ids must be positive", engine.ErrInvalidArgument)
	}
	if err := s.db.SetGroupMembers(ctx, groupID, ids); err != nil {
		return 0, err
	}
	return len(ids), nil
}
