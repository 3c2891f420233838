package lua

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"github.com/redis/go-redis/v9"
)

// closeRaw runs close.lua and returns its reply exactly as Redis sent it.
func closeRaw(t *testing.T, c *redis.Client, k PacketKeys, now int64) []any {
	t.Helper()
	v, err := closeScript.Run(context.Background(), c, []string{k.State, k.Shares, k.Events, k.Epoch}, testPacket, now).Slice()
	if err != nil {
		t.Fatalf("close.lua: %v", err)
	}
	return v
}

// The exact reply of close.lua for each outcome: code first, then for a close
// the remainder (integer string) and the number of shares taken back.
func TestCloseScriptReplies(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(*PacketState)
		before func(t *testing.T, c *redis.Client, k PacketKeys)
		now    int64
		want   []any
	}{
		{name: "closed at the expiry instant", now: testExpires, want: []any{int64(0), "800", int64(2)}},
		{name: "closed after a grab", now: testExpires + 1,
			before: func(t *testing.T, c *redis.Client, k PacketKeys) { grabRaw(t, c, k, 10, testNow, "r1") },
			want:   []any{int64(0), "300", int64(1)}},
		{name: "closed while awaiting settlement", now: testExpires,
			mutate: func(s *PacketState) { s.Status, s.Credit = "awaiting_settlement", false },
			want:   []any{int64(0), "800", int64(2)}},
		{name: "open with nothing left closes with zero", now: testExpires,
			mutate: func(s *PacketState) { s.Shares = nil }, want: []any{int64(0), "0", int64(0)}},
		{name: "large amounts stay integers", now: testExpires,
			mutate: func(s *PacketState) { s.Shares = []Share{{1, 20_000_000_000_000}, {2, 20_000_000_000_001}} },
			want:   []any{int64(0), "40000000000001", int64(2)}},
		{name: "not loaded", now: testExpires,
			before: func(t *testing.T, c *redis.Client, k PacketKeys) { c.Del(context.Background(), k.State) },
			want:   []any{int64(-1)}},
		{name: "already closed", now: testExpires + 5,
			before: func(t *testing.T, c *redis.Client, k PacketKeys) { closeRaw(t, c, k, testExpires) },
			want:   []any{int64(1)}},
		{name: "expired", now: testExpires, mutate: func(s *PacketState) { s.Status = "expired" }, want: []any{int64(1)}},
		{name: "refunded", now: testExpires, mutate: func(s *PacketState) { s.Status = "refunded" }, want: []any{int64(1)}},
		{name: "finished", now: testExpires,
			before: func(t *testing.T, c *redis.Client, k PacketKeys) {
				grabRaw(t, c, k, 10, testNow, "r1")
				grabRaw(t, c, k, 11, testNow, "r2")
			},
			want: []any{int64(2)}},
		{name: "unpaid", now: testExpires, mutate: func(s *PacketState) { s.Status = "unpaid" }, want: []any{int64(3)}},
		{name: "payment failed", now: testExpires, mutate: func(s *PacketState) { s.Status = "pay_failed" }, want: []any{int64(3)}},
		{name: "not expired yet", now: testExpires - 1, want: []any{int64(4)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, c, k := setup(t, tc.mutate)
			if tc.before != nil {
				tc.before(t, c, k)
			}
			if got := closeRaw(t, c, k, tc.now); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("reply = %#v\nwant %#v", got, tc.want)
			}
		})
	}
}

// A close marks the packet expired, empties the share list and appends one
// close event after the grabs; a grab after it is refused and a second close
// changes nothing.
func TestCloseScriptEffects(t *testing.T) {
	ctx := context.Background()
	_, c, k := setup(t, nil)
	if _, err := Grab(ctx, c, k, testPacket, 10, testNow, "r1"); err != nil {
		t.Fatal(err)
	}
	if r, err := Close(ctx, c, k, testPacket, testExpires-1); err != nil || r != (CloseReply{Code: CloseNotExpired}) {
		t.Fatalf("close before expiry = %+v, %v", r, err)
	}
	r, err := Close(ctx, c, k, testPacket, testExpires)
	if err != nil || r != (CloseReply{Code: CloseClosed, Remainder: 300, Count: 1}) {
		t.Fatalf("close = %+v, %v", r, err)
	}
	st := c.HGetAll(ctx, k.State).Val()
	if st["status"] != "expired" || st["closed_at"] != "1700086400000" {
		t.Fatalf("state after close = %v", st)
	}
	if n := c.Exists(ctx, k.Shares).Val(); n != 0 {
		t.Fatal("share list still there after close")
	}
	// A grab whose clock is still before the expiry arrives after the close.
	if g, err := Grab(ctx, c, k, testPacket, 11, testExpires-1, "r2"); err != nil || g.Code != GrabExpired {
		t.Fatalf("grab after close = %+v, %v", g, err)
	}
	// The earlier grabber still sees their grab.
	if g, err := Grab(ctx, c, k, testPacket, 10, testExpires+1, "r3"); err != nil || g.Code != GrabGranted || g.Amount != 500 {
		t.Fatalf("repeat after close = %+v, %v", g, err)
	}
	if r, err := Close(ctx, c, k, testPacket, testExpires+2); err != nil || r != (CloseReply{Code: CloseAlready}) {
		t.Fatalf("second close = %+v, %v", r, err)
	}
	events := c.XRange(ctx, k.Events, "-", "+").Val()
	if len(events) != 2 {
		t.Fatalf("%d events, want a grab and one close: %v", len(events), events)
	}
	want := map[string]any{"t": "close", "pk": "123", "rem": "300", "n": "1", "at": "1700086400000"}
	if events[0].Values["t"] != "grab" || !reflect.DeepEqual(events[1].Values, want) {
		t.Fatalf("events = %v\nwant a grab, then %v", events, want)
	}
}

func TestParseCloseReplyRejectsUnexpectedShapes(t *testing.T) {
	for _, v := range [][]any{
		nil,
		{"0"},
		{int64(0)},
		{int64(0), int64(300), int64(1)},
		{int64(0), "3x0", int64(1)},
		{int64(0), "-1", int64(1)},
		{int64(0), "300", "1"},
		{int64(1), "300", int64(1)},
		{int64(9)},
	} {
		if _, err := parseCloseReply(v); !errors.Is(err, ErrUnexpectedReply) {
			t.Errorf("parseCloseReply(%#v): err = %v, want ErrUnexpectedReply", v, err)
		}
	}
}
