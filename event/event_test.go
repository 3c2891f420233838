package event_test

import (
	"testing"

	"github.com/grab-engine/grab/event"
)

// Every type is its own kind, and every kind has a name.
func TestKinds(t *testing.T) {
	cases := []struct {
		ev   event.Event
		kind event.Kind
		name string
	}{
		{event.Grab{}, event.KindGrab, "grab"},
		{event.Close{}, event.KindClose, "close"},
		{event.Stock{}, event.KindStock, "stock"},
		{event.StockRecord{}, event.KindStockRecord, "stock record"},
		{event.Award{}, event.KindAward, "award"},
	}
	for _, tc := range cases {
		if got := tc.ev.Kind(); got != tc.kind || got.String() != tc.name {
			t.Errorf("%T: kind %d %q, want %d %q", tc.ev, got, got, tc.kind, tc.name)
		}
	}
	if s := event.Kind(0).String(); s != "unknown" {
		t.Errorf("Kind(0) = %q, want unknown", s)
	}
}
