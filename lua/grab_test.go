package lua

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

const (
	testPacket  = 123
	testNow     = 1_700_000_000_000
	testExpires = testNow + 86_400_000
)

// setup loads packet 123 with two shares (seq 1: 500 fen, seq 2: 300 fen),
// users 10, 11 and 12 eligible, after applying mutate to the state.
func setup(t *testing.T, mutate func(*PacketState)) (*miniredis.Miniredis, *redis.Client, PacketKeys) {
	t.Helper()
	m := miniredis.RunT(t)
	// Keys expire at an absolute time (PEXPIREAT); miniredis must agree on now.
	m.SetTime(time.UnixMilli(testNow))
	c := redis.NewClient(&redis.Options{Addr: m.Addr()})
	t.Cleanup(func() { c.Close() })
	k := NewKeys("grab", 16).Packet(testPacket)
	st := PacketState{Status: "open", ExpiresAtMs: testExpires, Credit: true, KeepUntilMs: testExpires + 3_600_000,
		Shares: []Share{{1, 500}, {2, 300}}, Eligible: []int64{10, 11, 12}}
	if mutate != nil {
		mutate(&st)
	}
	if ok, err := Load(context.Background(), c, k, st); err != nil || ok != Loaded {
		t.Fatalf("load = %v, %v", ok, err)
	}
	return m, c, k
}

// grabRaw runs grab.lua and returns its reply exactly as Redis sent it.
func grabRaw(t *testing.T, c *redis.Client, k PacketKeys, user, now int64, request string) []any {
	t.Helper()
	v, err := grabScript.Run(context.Background(), c, grabKeys(k),
		user, now, testPacket, request).Slice()
	if err != nil {
		t.Fatalf("grab.lua: %v", err)
	}
	return v
}

// The exact reply of grab.lua for each outcome: code first, then for a grant
// seq, amount (integer string), time (integer string), credit and repeat.
func TestGrabScriptReplies(t *testing.T) {
	cases := []struct {
		name    string
		mutate  func(*PacketState)
		before  func(t *testing.T, c *redis.Client, k PacketKeys) // earlier grabs
		user    int64
		now     int64
		request string
		want    []any
	}{
		{name: "granted", user: 10, now: testNow, request: "r1",
			want: []any{int64(0), int64(1), "500", "1700000000000", int64(1), int64(0)}},
		{name: "granted uncredited while awaiting settlement", user: 10, now: testNow, request: "r1",
			mutate: func(s *PacketState) { s.Status, s.Credit = "awaiting_settlement", false },
			want:   []any{int64(0), int64(1), "500", "1700000000000", int64(0), int64(0)}},
		{name: "repeat by another call", user: 10, now: testNow + 5, request: "r2",
			before: func(t *testing.T, c *redis.Client, k PacketKeys) { grabRaw(t, c, k, 10, testNow, "r1") },
			want:   []any{int64(0), int64(1), "500", "1700000000000", int64(1), int64(1)}},
		{name: "re-send of the same call is not a repeat", user: 10, now: testNow + 5, request: "r1",
			before: func(t *testing.T, c *redis.Client, k PacketKeys) { grabRaw(t, c, k, 10, testNow, "r1") },
			want:   []any{int64(0), int64(1), "500", "1700000000000", int64(1), int64(0)}},
		{name: "second grabber gets the next share", user: 11, now: testNow + 1, request: "r2",
			before: func(t *testing.T, c *redis.Client, k PacketKeys) { grabRaw(t, c, k, 10, testNow, "r1") },
			want:   []any{int64(0), int64(2), "300", "1700000000001", int64(1), int64(0)}},
		{name: "rebuilt grab is a repeat", user: 10, now: testNow, request: "r9",
			mutate: func(s *PacketState) {
				s.Shares = s.Shares[1:]
				s.Grabbed = []Grabbed{{UserID: 10, Seq: 1, Amount: 500, AtMs: testNow - 7, Credited: true}}
			},
			want: []any{int64(0), int64(1), "500", "1699999999993", int64(1), int64(1)}},
		{name: "not loaded", user: 10, now: testNow, request: "r1",
			before: func(t *testing.T, c *redis.Client, k PacketKeys) { c.Del(context.Background(), k.State) },
			want:   []any{int64(-1)}},
		{name: "loaded under another dataset epoch", user: 10, now: testNow, request: "r1",
			before: func(t *testing.T, c *redis.Client, k PacketKeys) {
				c.Set(context.Background(), k.Epoch, "restarted", 0)
			},
			want: []any{int64(-2)}},
		{name: "dataset epoch missing", user: 10, now: testNow, request: "r1",
			before: func(t *testing.T, c *redis.Client, k PacketKeys) { c.Del(context.Background(), k.Epoch) },
			want:   []any{int64(-2)}},
		{name: "not open: unpaid", user: 10, now: testNow, request: "r1",
			mutate: func(s *PacketState) { s.Status = "unpaid" }, want: []any{int64(2)}},
		{name: "not open: payment failed", user: 10, now: testNow, request: "r1",
			mutate: func(s *PacketState) { s.Status = "pay_failed" }, want: []any{int64(2)}},
		{name: "expired by time", user: 10, now: testExpires, request: "r1", want: []any{int64(3)}},
		{name: "expired by status", user: 10, now: testNow, request: "r1",
			mutate: func(s *PacketState) { s.Status = "expired" }, want: []any{int64(3)}},
		{name: "refunded", user: 10, now: testNow, request: "r1",
			mutate: func(s *PacketState) { s.Status = "refunded" }, want: []any{int64(3)}},
		{name: "not eligible", user: 99, now: testNow, request: "r1", want: []any{int64(4)}},
		{name: "sold out", user: 12, now: testNow, request: "r3",
			before: func(t *testing.T, c *redis.Client, k PacketKeys) {
				grabRaw(t, c, k, 10, testNow, "r1")
				grabRaw(t, c, k, 11, testNow, "r2")
			},
			want: []any{int64(5)}},
		{name: "sold out: empty list while open", user: 12, now: testNow, request: "r1",
			mutate: func(s *PacketState) { s.Shares = nil },
			want:   []any{int64(5)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, c, k := setup(t, tc.mutate)
			if tc.before != nil {
				tc.before(t, c, k)
			}
			if got := grabRaw(t, c, k, tc.user, tc.now, tc.request); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("reply = %#v\nwant %#v", got, tc.want)
			}
		})
	}
}

// A grant records the grab, moves the counters and appends one event; the
// last share also finishes the packet. Refusals change nothing.
func TestGrabScriptEffects(t *testing.T) {
	ctx := context.Background()
	_, c, k := setup(t, nil)
	if _, err := Grab(ctx, c, k, testPacket, 99, testNow, "x"); err != nil { // not eligible: no effect
		t.Fatal(err)
	}
	r1, err := Grab(ctx, c, k, testPacket, 10, testNow, "r1")
	if err != nil || r1 != (GrabReply{Code: GrabGranted, Seq: 1, Amount: 500, AtMs: testNow, Credited: true}) {
		t.Fatalf("grab = %+v, %v", r1, err)
	}
	if st := c.HGetAll(ctx, k.State).Val(); st["status"] != "open" {
		t.Fatalf("state after one grab = %v", st)
	}
	if v := c.HGet(ctx, k.Grabbed, "10").Val(); v != "1:500:1700000000000:1:r1" {
		t.Fatalf("grabbed[10] = %q", v)
	}
	if _, err := Grab(ctx, c, k, testPacket, 10, testNow+1, "r2"); err != nil { // repeat: no effect
		t.Fatal(err)
	}
	r2, err := Grab(ctx, c, k, testPacket, 11, testNow+2, "r3")
	if err != nil || r2 != (GrabReply{Code: GrabGranted, Seq: 2, Amount: 300, AtMs: testNow + 2, Credited: true}) {
		t.Fatalf("last grab = %+v, %v", r2, err)
	}
	st := c.HGetAll(ctx, k.State).Val()
	if st["status"] != "finished" || st["finished_at"] != "1700000000002" {
		t.Fatalf("state after the last grab = %v", st)
	}
	if n := c.LLen(ctx, k.Shares).Val(); n != 0 {
		t.Fatalf("%d shares left", n)
	}
	events := c.XRange(ctx, k.Events, "-", "+").Val()
	want := []map[string]any{
		{"t": "grab", "pk": "123", "u": "10", "seq": "1", "amt": "500", "at": "1700000000000", "cr": "1", "fin": "0"},
		{"t": "grab", "pk": "123", "u": "11", "seq": "2", "amt": "300", "at": "1700000000002", "cr": "1", "fin": "1"},
	}
	if len(events) != len(want) {
		t.Fatalf("%d events, want %d: %v", len(events), len(want), events)
	}
	for i := range want {
		if !reflect.DeepEqual(events[i].Values, want[i]) {
			t.Fatalf("event %d = %v\nwant %v", i, events[i].Values, want[i])
		}
	}
}

// Load never overwrites a state that is there: an open and a rebuild racing
// each other cannot hand a share out twice.
func TestLoadKeepsExistingState(t *testing.T) {
	ctx := context.Background()
	m, c, k := setup(t, nil)
	if _, err := Grab(ctx, c, k, testPacket, 10, testNow, "r1"); err != nil {
		t.Fatal(err)
	}
	ok, err := Load(ctx, c, k, PacketState{Status: "open", ExpiresAtMs: testExpires, KeepUntilMs: testExpires,
		Shares: []Share{{1, 500}, {2, 300}}, Eligible: []int64{10}})
	if err != nil || ok != Fresh {
		t.Fatalf("second load = %v, %v; want Fresh", ok, err)
	}
	if got := c.LRange(ctx, k.Shares, 0, -1).Val(); !reflect.DeepEqual(got, []string{"2:300:last"}) {
		t.Fatalf("shares = %v", got)
	}
	// Every key of the packet expires at KeepUntil, the grabbed hash too.
	for _, key := range []string{k.Shares, k.Grabbed, k.Eligible} {
		if ttl := m.TTL(key); ttl != m.TTL(k.State) || ttl != time.Duration(testExpires+3_600_000-testNow)*time.Millisecond {
			t.Fatalf("%s: ttl %v, state ttl %v", key, ttl, m.TTL(k.State))
		}
	}
}

func TestParseGrabReplyRejectsUnexpectedShapes(t *testing.T) {
	for _, v := range [][]any{
		nil,
		{"0"},
		{int64(0), int64(1), "500"},
		{int64(0), "1", "500", "1", int64(1), int64(0)},
		{int64(0), int64(1), int64(500), "1", int64(1), int64(0)},
		{int64(0), int64(1), "5x0", "1", int64(1), int64(0)},
		{int64(7)},
	} {
		if _, err := parseGrabReply(v); !errors.Is(err, ErrUnexpectedReply) {
			t.Errorf("parseGrabReply(%#v): err = %v, want ErrUnexpectedReply", v, err)
		}
	}
}

func TestGrabbedRoundTrip(t *testing.T) {
	g := Grabbed{UserID: 42, Seq: 3, Amount: 1999, AtMs: testNow, Credited: true}
	got, err := DecodeGrabbed(42, encodeGrabbed(g))
	if err != nil || got != g {
		t.Fatalf("round trip = %+v, %v", got, err)
	}
	// The value grab.lua writes carries the request id after the last colon.
	got, err = DecodeGrabbed(42, "3:1999:1700000000000:0:abcdef")
	if err != nil || got != (Grabbed{UserID: 42, Seq: 3, Amount: 1999, AtMs: testNow}) {
		t.Fatalf("decode = %+v, %v", got, err)
	}
	if _, err := DecodeGrabbed(42, "garbage"); !errors.Is(err, ErrUnexpectedReply) {
		t.Fatalf("decode garbage: err = %v", err)
	}
}
