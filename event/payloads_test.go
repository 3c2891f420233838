package event

import (
	"testing"
	"time"
)

func TestYuan(t *testing.T) {
	for fen, want := range map[int64]string{0: "0.00", 5: "0.05", 10: "0.10", 1234: "12.34", 100: "1.00", -5: "-0.05",
		-1234: "-12.34", 9223372036854775807: "92233720368547758.07", -9223372036854775808: "-92233720368547758.08"} {
		if got := Yuan(fen); got != want {
			t.Errorf("Yuan(%d) = %q, want %q", fen, got, want)
		}
	}
}

// A message's id, aggregate and subject follow from its payload.
func TestPayloadMessage(t *testing.T) {
	at := time.Date(2026, 5, 20, 13, 14, 0, 0, time.FixedZone("CST", 8*3600))
	m := StockChanged{ActivityID: 1, ProductID: 42, SKU: 420, Version: 7}.Message(at)
	if m.ID != "stock:1:42:420:7" || m.Aggregate != "sku:1:42:420" || m.Kind != MsgStockChanged ||
		m.Subject() != "grab.stock.changed.1.42.420" || m.At.Location() != time.UTC || !m.At.Equal(at) {
		t.Fatalf("%+v %s", m, m.Subject())
	}
	g := PacketGrabbed{PacketID: 42, Seq: 3, UserID: 7, Amount: Yuan(321), Credited: true}.Message(at)
	if g.ID != "grab:42:3" || g.Subject() != "grab.packet.grabbed.42" ||
		string(g.Payload) != `{"packet_id":42,"seq":3,"user_id":7,"amount":"3.21","credited":true,"finished":false}` {
		t.Fatalf("%+v %s", g, g.Payload)
	}
}
