package packet

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/engine/money"
	"github.com/grab-engine/grab/lua"
	"github.com/grab-engine/grab/store"
)

// refundBatch is how many packets one store query of the refund job returns.
const refundBatch = 100

// CloseExpired is one pass of the refund job. Every packet the store still
// shows open (or awaiting settlement) past its expiry is closed in Redis by
// close.lua, which takes the shares left and appends a close event after the
// packet's grabs; the writer then marks it expired and refunds the remainder
// to the sender, once, in the transaction that applies the event. It returns
// how many packets this pass closed.
//
// Any number of passes may run at once, in one process or many: close.lua
// closes a packet once, and the ledger refunds it once. A crash at any point
// leaves either the close event in the stream or an uncommitted transaction.
func (s *Service) CloseExpired(ctx context.Context) (int, error) {
	now := s.clock.Now().UTC()
	closed := 0
	var firstErr error
	for after := int64(0); ; {
		ps, err := s.db.ExpiredPackets(ctx, now, after, refundBatch)
		if err != nil {
			return closed, err
		}
		for _, p := range ps {
			after = p.ID
			ok, err := s.closePacket(ctx, p)
			if err != nil {
				if ctx.Err() != nil {
					return closed, ctx.Err()
				}
				// One packet that cannot be closed now must not hold the others.
				s.log.WarnContext(ctx, "refund: cannot close an expired packet", "packet_id", p.ID, "err", err)
				if firstErr == nil {
					firstErr = err
				}
				continue
			}
			if ok {
				closed++
			}
		}
		if len(ps) < refundBatch {
			break
		}
	}
	if err := s.refundSettled(ctx, now); err != nil && firstErr == nil {
		firstErr = err
	}
	return closed, firstErr
}

// closePacket runs close.lua on one packet, rebuilding its Redis state from
// the store first if Redis lost it. It reports whether this call closed it.
func (s *Service) closePacket(ctx context.Context, p store.Packet) (bool, error) {
	keys := s.keys.Packet(p.ID)
	for attempt := 0; attempt < 2; attempt++ {
		r, err := lua.Close(ctx, s.rdb, keys, p.ID, s.nowMs())
		if err != nil {
			return false, err
		}
		switch r.Code {
		case lua.CloseClosed:
			s.log.InfoContext(ctx, "expired packet closed", "packet_id", p.ID, "remainder", money.Format(r.Remainder), "shares", r.Count)
			return true, nil
		case lua.CloseNotLoaded, lua.CloseVerify:
			// The rebuild takes the packet's load lock and reads the store
			// under it, so it never puts back a state someone moved past.
			err := s.rebuild(ctx, p.ID, p.SenderID)
			if errors.Is(err, engine.ErrNotOpen) {
				return false, nil // its payment failed meanwhile: nothing to close
			}
			if err != nil {
				return false, err
			}
		case lua.CloseAlready, lua.CloseFinished, lua.CloseNotOpen, lua.CloseNotExpired:
			// Closed by another pass, or its last share went just before: the
			// writer brings the store in line. Not expired: another clock.
			return false, nil
		default:
			return false, fmt.Errorf("%w: close code %d", lua.ErrUnexpectedReply, r.Code)
		}
	}
	return false, fmt.Errorf("%w: packet %d could not be loaded", engine.ErrBusy, p.ID)
}

// refundSettled refunds packets that are closed and paid but not refunded:
// the writer refunds a paid packet when it applies the close, and a late
// settlement refunds it then; this sweep catches one that neither did.
func (s *Service) refundSettled(ctx context.Context, now time.Time) error {
	for after := int64(0); ; {
		ids, err := s.db.UnrefundedPackets(ctx, after, refundBatch)
		if err != nil {
			return err
		}
		for _, id := range ids {
			after = id
			if err := s.db.RefundIfSettled(ctx, id, now); err != nil {
				return err
			}
			s.log.InfoContext(ctx, "closed packet refunded after its settlement", "packet_id", id)
		}
		if len(ids) < refundBatch {
			return nil
		}
	}
}

// RunRefunder runs CloseExpired every RefundInterval until ctx ends.
func (s *Service) RunRefunder(ctx context.Context) error {
	return s.core.Every(ctx, s.cfg.RefundInterval, "refund pass", func(ctx context.Context) error {
		_, err := s.CloseExpired(ctx)
		return err
	})
}
