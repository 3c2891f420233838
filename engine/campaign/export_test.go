package campaign

import (
	"context"

	"github.com/grab-engine/grab/store"
)

// SetPayoutHooks stops a payout where a crash would: afterTransferring runs
// once an award is 7 in MySQL, before the transfer call; beforeTransferred
// after the service confirmed, before 7 -> 4. An error returned by a hook
// ends the payout there, as if the process had died.
func SetPayoutHooks(s *Service, afterTransferring, beforeTransferred func(context.Context, store.Award) error) {
	s.hooks = payoutHooks{afterTransferring: afterTransferring, beforeTransferred: beforeTransferred}
}
