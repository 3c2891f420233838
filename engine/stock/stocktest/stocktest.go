// Package stocktest holds test helpers that compare a SKU's stock in Redis
// with MySQL's, for tests of the stock service and of the writer that makes
// it durable.
package stocktest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/grab-engine/grab/engine/stock"
	"github.com/grab-engine/grab/lua"
	"github.com/grab-engine/grab/store"
)

// SKU names one activity product's SKU.
type SKU struct{ Activity, Product, SKU int64 }

// Item is a line of qty of the SKU from scope.
func (r SKU) Item(scope string, qty int64) stock.Item {
	return stock.Item{Scope: scope, ActivityID: r.Activity, ProductID: r.Product, SKU: r.SKU, Qty: qty}
}

func (r SKU) String() string { return fmt.Sprintf("%d/%d/%d", r.Activity, r.Product, r.SKU) }

// InRedis is a SKU's hash in Redis in a canonical form: status, version,
// and every scope's t,a,r,s.
func InRedis(t testing.TB, rdb redis.Cmdable, keys lua.Keys, r SKU) string {
	t.Helper()
	st, err := lua.StockSKU(context.Background(), rdb, keys.Stock(r.Activity, r.Product), r.SKU)
	if err != nil {
		t.Fatal(err)
	}
	var parts []string
	for scope, c := range st.Scopes {
		parts = append(parts, fmt.Sprintf("%s=%d,%d,%d,%d", scope, c.Total, c.Available, c.Reserved, c.Sold))
	}
	slices.Sort(parts)
	return fmt.Sprintf("st=%s ver=%d %s", st.Status, st.Version, strings.Join(parts, " "))
}

// InMySQL is the SKU as MySQL has it, in InRedis's form; "absent" when
// MySQL has no row of it.
func InMySQL(t testing.TB, db *store.DB, r SKU) string {
	t.Helper()
	s, err := db.Stock(context.Background(), r.Activity, r.Product, r.SKU)
	if errors.Is(err, store.ErrNotFound) {
		return "absent"
	}
	if err != nil {
		t.Fatal(err)
	}
	var parts []string
	for _, c := range s.Scopes {
		parts = append(parts, fmt.Sprintf("%s=%d,%d,%d,%d", c.Scope, c.Total, c.Available, c.Reserved, c.Sold))
	}
	slices.Sort(parts)
	return fmt.Sprintf("st=%s ver=%d %s", s.Status, s.Version, strings.Join(parts, " "))
}

// WaitDurable waits (10 s at most) until MySQL has exactly Redis's state of
// every SKU: same status, version and counters in every scope.
func WaitDurable(t testing.TB, rdb redis.Cmdable, keys lua.Keys, db *store.DB, refs ...SKU) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var diffs []string
		for _, r := range refs {
			if want, got := InRedis(t, rdb, keys, r), InMySQL(t, db, r); want != got {
				diffs = append(diffs, fmt.Sprintf("SKU %v: redis %q, mysql %q", r, want, got))
			}
		}
		if len(diffs) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("MySQL did not catch up with Redis:\n%s", strings.Join(diffs, "\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// GaplessChanges checks MySQL's change log of a SKU holds versions 1..N, N
// being the SKU's version in Redis.
func GaplessChanges(t testing.TB, rdb redis.Cmdable, keys lua.Keys, db *store.DB, r SKU) {
	t.Helper()
	st, err := lua.StockSKU(context.Background(), rdb, keys.Stock(r.Activity, r.Product), r.SKU)
	if err != nil || st.Version == 0 {
		t.Fatalf("SKU %v in Redis: %+v, %v", r, st, err)
	}
	ver := st.Version
	changes, err := db.StockChanges(context.Background(), r.Activity, r.Product, r.SKU)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(changes)) != ver {
		t.Fatalf("SKU %v: %d changes logged, Redis is at version %d", r, len(changes), ver)
	}
	for i, c := range changes {
		if c.Version != int64(i+1) {
			t.Fatalf("SKU %v: change %d has version %d; the log must run 1..%d without gaps", r, i, c.Version, ver)
		}
	}
}
