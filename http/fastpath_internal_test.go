package http

import (
	"encoding/json"
	"testing"

	"github.com/grab-engine/grab/engine/money"
)

// The hand-written grab answer is what encoding/json writes, byte for byte.
func TestGrabJSONMatchesEncoding(t *testing.T) {
	for _, r := range []grabResponse{
		{},
		{PacketID: 1, Amount: 1, Seq: 1},
		{PacketID: 9_223_372_036_854_775_807, Amount: 20000, Seq: 100, Repeat: true, Credited: true},
		{PacketID: 42, Amount: 1234567, Seq: 7, Credited: true},
		{PacketID: 3, Amount: -5, Seq: 0, Repeat: true},
	} {
		want, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendGrabJSON(nil, r); string(got) != string(want) {
			t.Errorf("%+v: got %s, want %s", r, got, want)
		}
	}
}

// appendMoney writes what money.Format does.
func TestAppendMoneyMatchesFormat(t *testing.T) {
	for _, fen := range []int64{0, 1, 9, 10, 99, 100, 101, 1234, -1, -5, -99, -100, -12345, 1_000_000_000, 9_223_372_036_854_775_807} {
		if got, want := string(appendMoney(nil, fen)), money.Format(fen); got != want {
			t.Errorf("%d: got %q, want %q", fen, got, want)
		}
	}
}
