package stock

import (
	"context"
	"fmt"

	"github.com/grab-engine/grab/engine/errs"
	"github.com/grab-engine/grab/lua"
)

// TCCPhase is one of the participant's three calls.
type TCCPhase string

const (
	TCCTry     TCCPhase = "try"
	TCCConfirm TCCPhase = "confirm"
	TCCCancel  TCCPhase = "cancel"
)

// TCC runs one phase of a branch: try reserves (available → reserved),
// confirm sells what was reserved, cancel gives it back. Barrier semantics
// per (gid, branch) and product: repeats are no-ops, and a cancel before
// its try succeeds and refuses the late try (ErrTCCRefused).
//
// What dtm is told follows its retry rules: it treats a refusal as final
// only for a try, and retries a confirm or cancel that answers anything but
// success forever. So a try's refusal is an error, and a confirm or cancel
// always succeeds once it is recorded: a cancel of a branch never tried is a
// null compensation; a confirm of a branch never tried (its reservation was
// lost, or dtm confirmed past a failed try) sells nothing and is recorded,
// so its late try is refused; a confirm after a cancel and a cancel after a
// confirm change nothing. Those last three never happen while dtm and Redis
// keep their state: each is logged and counted
// (grab_stock_tcc_anomalies_total) for a person to look at.
func (s *Service) TCC(ctx context.Context, phase TCCPhase, gid, branchID string, items []Item) error {
	for _, id := range [][2]string{{"gid", gid}, {"branch_id", branchID}} {
		if !tccIDRe.MatchString(id[1]) {
			return fmt.Errorf("%w: %s must be 1 to 128 of A-Z a-z 0-9 _ . : -", errs.ErrInvalidArgument, id[0])
		}
	}
	if phase != TCCTry && phase != TCCConfirm && phase != TCCCancel {
		return fmt.Errorf("%w: phase must be try, confirm or cancel", errs.ErrInvalidArgument)
	}
	products, groups, err := byProduct(items)
	if err != nil {
		return err
	}
	if phase == TCCTry && s.core.Lagging() {
		return errs.ErrBusy
	}
	id := "t:" + gid + "/" + branchID // "/" is outside the ids' alphabet: no two branches share a record
	for _, p := range products {
		if phase == TCCTry {
			r, err := s.exec(ctx, lua.Direct(s.rdb), lua.StockOp{Op: "try", ID: id, ActivityID: p[0], ProductID: p[1], Items: groups[p]})
			if err != nil {
				return err
			}
			if err := codeErr(r.Code); err != nil {
				return err // dtm cancels the branch, which gives back what other products reserved
			}
			continue
		}
		r, err := s.withRecord(ctx, p[0], p[1], id, string(phase))
		if err != nil {
			return err
		}
		if r.Code != lua.StockOK {
			s.m.tccAnomalies.Inc()
			s.log.WarnContext(ctx, "stock: TCC "+string(phase)+" found its branch in a state dtm does not leave it in; answered success so the transaction ends",
				"gid", gid, "branch_id", branchID, "activity", p[0], "product", p[1], "found", r.Code.String())
		}
	}
	return nil
}
