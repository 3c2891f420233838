package stock

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/grab-engine/grab/engine/errs"
	"github.com/grab-engine/grab/lua"
	"github.com/grab-engine/grab/store"
)

// Counters of one scope. Available + Reserved + Sold = Total.
type Counters struct {
	Total, Available, Reserved, Sold int64
}

// SKUView is a SKU's stock as Redis has it now.
type SKUView struct {
	ForSale  bool
	Revoked  bool
	HighSeas Counters
	Pools    map[string]Counters // by pool id
}

// SKU reads a SKU's counters from Redis, from a product verified
// under the current dataset epoch (verified first if it is not).
func (s *Service) SKU(ctx context.Context, activityID, productID, sku int64) (SKUView, error) {
	if err := validRef(activityID, productID, sku); err != nil {
		return SKUView{}, err
	}
	k := s.keys.Stock(activityID, productID)
	var st lua.StockSKUState
	err := s.onVerified(ctx, activityID, productID, func() (verify bool, err error) {
		st, verify, err = lua.ReadStockSKU(ctx, s.rdb, k, sku)
		if err != nil || !verify || st.Version != 0 {
			return verify, err
		}
		// Neither Redis nor MySQL knows the SKU: not found, and no need to
		// verify (and mark) a product for a look-up of nothing.
		if _, err := s.db.Stock(ctx, activityID, productID, sku); errors.Is(err, store.ErrNotFound) {
			return false, fmt.Errorf("%w: no such SKU in the activity", errs.ErrNotFound)
		} else if err != nil {
			return false, err
		}
		return true, nil
	})
	if err != nil {
		return SKUView{}, err
	}
	if st.Status == "" {
		return SKUView{}, fmt.Errorf("%w: no such SKU in the activity", errs.ErrNotFound)
	}
	v := SKUView{ForSale: st.Status == "on", Revoked: st.Status == "rev", Pools: map[string]Counters{}}
	for scope, c := range st.Scopes {
		cs := Counters{Total: c.Total, Available: c.Available, Reserved: c.Reserved, Sold: c.Sold}
		if scope == ScopeHighSeas {
			v.HighSeas = cs
		} else if pool, ok := strings.CutPrefix(scope, "pool:"); ok {
			v.Pools[pool] = cs
		}
	}
	return v, nil
}
