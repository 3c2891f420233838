package http_test

import (
	"context"
	"errors"
	"fmt"
	nethttp "net/http"
	"strings"
	"testing"
	"time"

	"github.com/grab-engine/grab/engine/packet"

	"github.com/golang-jwt/jwt/v5"

	"github.com/grab-engine/grab/engine"
	grabhttp "github.com/grab-engine/grab/http"
	"github.com/grab-engine/grab/store"
)

// fixture is the state every malformed request runs against: group 7 of
// users 1..4, user 1 funded, an open packet, an unpaid one, and an unpaid
// one of a sender (user 2) who cannot pay it.
type fixture struct {
	open, unpaid, poor int64
}

func newFixture(t *testing.T, e *env) fixture {
	t.Helper()
	ctx := context.Background()
	if _, err := e.Packets.SetGroupMembers(ctx, 7, []int64{1, 2, 3, 4}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Packets.Deposit(ctx, 1, 100_000, "seed-1"); err != nil {
		t.Fatal(err)
	}
	mk := func(sender int64, kind string, count int, amount int64) int64 {
		p, err := e.Packets.CreatePacket(ctx, packet.NewPacket{SenderID: sender, Kind: kind, GroupID: 7, Count: count, Amount: amount})
		if err != nil {
			t.Fatal(err)
		}
		return p.ID
	}
	f := fixture{open: mk(1, packet.KindGroupLucky, 3, 1000), unpaid: mk(1, packet.KindGroupEqual, 2, 100), poor: mk(2, packet.KindGroupEqual, 1, 100)}
	if _, err := e.Packets.PayByBalance(ctx, f.open, 1); err != nil {
		t.Fatal(err)
	}
	// One grab already, so the open packet has hot state worth comparing.
	if _, err := e.Packets.Grab(ctx, f.open, 2); err != nil {
		t.Fatal(err)
	}
	return f
}

// snapshot is everything a rejected request must leave untouched.
type snapshot struct {
	balances   map[int64]int64
	totals     store.Totals
	members    []int64
	packets    map[int64]packet.Packet
	nextExists bool
}

func (f fixture) snapshot(t *testing.T, e *env) snapshot {
	t.Helper()
	ctx := context.Background()
	s := snapshot{packets: map[int64]packet.Packet{}}
	s.balances, s.totals = e.money(t, 1, 2, 3, 4, 5, 9)
	var err error
	if s.members, err = e.db.GroupMembers(ctx, 7); err != nil {
		t.Fatal(err)
	}
	for _, id := range []int64{f.open, f.unpaid, f.poor} {
		sender := int64(1)
		if id == f.poor {
			sender = 2
		}
		if s.packets[id], err = e.Packets.GetPacket(ctx, id, sender); err != nil {
			t.Fatal(err)
		}
	}
	// Packet ids are allocated in order: a packet created by mistake would be here.
	_, err = e.Packets.GetPacket(ctx, f.poor+1, 1)
	s.nextExists = !errors.Is(err, engine.ErrNotFound)
	return s
}

func TestMalformedInput(t *testing.T) {
	e := setup(t)
	f := newFixture(t, e)
	open, unpaid, poor := f.open, f.unpaid, f.poor

	dep := "/v1/admin/accounts/2/deposit"
	members := "/v1/admin/groups/7/members"
	create := "/v1/packets"
	pay := func(id any) string { return fmt.Sprintf("/v1/packets/%v/pay", id) }
	grab := func(id any) string { return fmt.Sprintf("/v1/packets/%v/grab", id) }
	get := func(id any) string { return fmt.Sprintf("/v1/packets/%v", id) }
	lucky := func(fields string) string {
		return `{"kind":"group_lucky","group_id":7,"count":3,"amount":"5.00"` + fields + `}`
	}
	tooBig := `{"amount":"1.00","ref":"` + strings.Repeat("x", 70<<10) + `"}`
	u1, u2, u3, u5, u9 := user(1), user(2), user(3), user(5), user(9)
	bearer := func(tok string) auth { return auth{"Authorization": "Bearer " + tok} }
	hs := jwt.SigningMethodHS256

	type tc = rejectCase
	bad := func(name, method, path, body string, a auth) tc {
		return tc{name, method, path, body, a, 400, "INVALID_ARGUMENT"}
	}
	cases := []tc{
		// Deposit bodies.
		bad("deposit unknown field", "POST", dep, `{"amount":"1.00","ref":"a","foo":1}`, admin()),
		bad("deposit number for money", "POST", dep, `{"amount":1.00,"ref":"a"}`, admin()),
		bad("deposit integer for money", "POST", dep, `{"amount":1,"ref":"a"}`, admin()),
		bad("deposit negative money", "POST", dep, `{"amount":"-1.00","ref":"a"}`, admin()),
		bad("deposit three decimals", "POST", dep, `{"amount":"1.001","ref":"a"}`, admin()),
		bad("deposit exponent", "POST", dep, `{"amount":"1e2","ref":"a"}`, admin()),
		bad("deposit empty money", "POST", dep, `{"amount":"","ref":"a"}`, admin()),
		bad("deposit huge money", "POST", dep, `{"amount":"123456789012345678901234567890","ref":"a"}`, admin()),
		bad("deposit over the maximum", "POST", dep, `{"amount":"10000000.01","ref":"a"}`, admin()),
		bad("deposit zero", "POST", dep, `{"amount":"0","ref":"a"}`, admin()),
		bad("deposit null money", "POST", dep, `{"amount":null,"ref":"a"}`, admin()),
		bad("deposit money with spaces", "POST", dep, `{"amount":" 1.00","ref":"a"}`, admin()),
		bad("deposit missing ref", "POST", dep, `{"amount":"1.00"}`, admin()),
		bad("deposit empty ref", "POST", dep, `{"amount":"1.00","ref":""}`, admin()),
		bad("deposit ref too long", "POST", dep, `{"amount":"1.00","ref":"`+strings.Repeat("r", 65)+`"}`, admin()),
		bad("deposit ref of wrong type", "POST", dep, `{"amount":"1.00","ref":5}`, admin()),
		bad("deposit trailing garbage", "POST", dep, `{"amount":"1.00","ref":"a"} x`, admin()),
		bad("deposit two objects", "POST", dep, `{"amount":"1.00","ref":"a"}{}`, admin()),
		bad("deposit array body", "POST", dep, `[{"amount":"1.00","ref":"a"}]`, admin()),
		bad("deposit string body", "POST", dep, `"1.00"`, admin()),
		bad("deposit not JSON", "POST", dep, `amount=1.00&ref=a`, admin()),
		bad("deposit truncated JSON", "POST", dep, `{"amount":"1.00",`, admin()),
		bad("deposit missing body", "POST", dep, ``, admin()),
		bad("deposit path id abc", "POST", "/v1/admin/accounts/abc/deposit", `{"amount":"1.00","ref":"a"}`, admin()),
		bad("deposit path id -1", "POST", "/v1/admin/accounts/-1/deposit", `{"amount":"1.00","ref":"a"}`, admin()),
		bad("deposit path id 0", "POST", "/v1/admin/accounts/0/deposit", `{"amount":"1.00","ref":"a"}`, admin()),
		bad("deposit path id +2", "POST", "/v1/admin/accounts/+2/deposit", `{"amount":"1.00","ref":"a"}`, admin()),
		bad("deposit path id 1.5", "POST", "/v1/admin/accounts/1.5/deposit", `{"amount":"1.00","ref":"a"}`, admin()),
		bad("deposit path id overflow", "POST", "/v1/admin/accounts/99999999999999999999/deposit", `{"amount":"1.00","ref":"a"}`, admin()),
		{"deposit body over 64 KiB", "POST", dep, tooBig, admin(), 413, "PAYLOAD_TOO_LARGE"},
		{"deposit ref reused with another amount", "POST", "/v1/admin/accounts/1/deposit", `{"amount":"1.00","ref":"seed-1"}`, admin(), 409, "IDEMPOTENCY_CONFLICT"},
		{"deposit ref reused for another user", "POST", dep, `{"amount":"1000.00","ref":"seed-1"}`, admin(), 409, "IDEMPOTENCY_CONFLICT"},

		// Admin auth.
		{"admin without credentials", "POST", dep, `{"amount":"1.00","ref":"a"}`, nil, 401, "UNAUTHENTICATED"},
		{"admin with a wrong token", "POST", dep, `{"amount":"1.00","ref":"a"}`, bearer("nope"), 401, "UNAUTHENTICATED"},
		{"admin with an empty bearer", "POST", dep, `{"amount":"1.00","ref":"a"}`, bearer(""), 401, "UNAUTHENTICATED"},
		{"admin with the token as Basic", "POST", dep, `{"amount":"1.00","ref":"a"}`, auth{"Authorization": "Basic " + adminToken}, 401, "UNAUTHENTICATED"},
		{"admin with a user token", "POST", dep, `{"amount":"1.00","ref":"a"}`, u1, 403, "FORBIDDEN"},
		{"members with a user token", "PUT", members, `{"user_ids":[1]}`, u1, 403, "FORBIDDEN"},

		// Members bodies.
		bad("members string id", "PUT", members, `{"user_ids":["1"]}`, admin()),
		bad("members float id", "PUT", members, `{"user_ids":[1.5]}`, admin()),
		bad("members exponent id", "PUT", members, `{"user_ids":[1e2]}`, admin()),
		bad("members negative id", "PUT", members, `{"user_ids":[1,-2]}`, admin()),
		bad("members zero id", "PUT", members, `{"user_ids":[0]}`, admin()),
		bad("members overflowing id", "PUT", members, `{"user_ids":[99999999999999999999]}`, admin()),
		bad("members missing list", "PUT", members, `{}`, admin()),
		bad("members null list", "PUT", members, `{"user_ids":null}`, admin()),
		bad("members list of wrong type", "PUT", members, `{"user_ids":{"1":true}}`, admin()),
		bad("members unknown field", "PUT", members, `{"user_ids":[1],"group":7}`, admin()),
		bad("members too many", "PUT", members, `{"user_ids":[`+seq(501)+`]}`, admin()),
		bad("members path id abc", "PUT", "/v1/admin/groups/abc/members", `{"user_ids":[1]}`, admin()),
		bad("members path id -1", "PUT", "/v1/admin/groups/-1/members", `{"user_ids":[1]}`, admin()),
		bad("members path id 0", "PUT", "/v1/admin/groups/0/members", `{"user_ids":[1]}`, admin()),

		// Create bodies.
		bad("create missing body", "POST", create, ``, u1),
		bad("create empty object", "POST", create, `{}`, u1),
		bad("create null body", "POST", create, `null`, u1),
		bad("create unknown field", "POST", create, lucky(`,"memo":"x"`), u1),
		bad("create field in other case", "POST", create, `{"kind":"group_lucky","group_id":7,"count":3,"Amount":"5.00"}`, u1),
		bad("create repeated field", "POST", create, `{"kind":"group_lucky","group_id":7,"count":3,"amount":"5.00","amount":"6.00"}`, u1),
		bad("create number for money", "POST", create, `{"kind":"group_lucky","group_id":7,"count":3,"amount":5.00}`, u1),
		bad("create negative money", "POST", create, `{"kind":"group_lucky","group_id":7,"count":3,"amount":"-5.00"}`, u1),
		bad("create three decimals", "POST", create, `{"kind":"group_lucky","group_id":7,"count":3,"amount":"5.001"}`, u1),
		bad("create exponent money", "POST", create, `{"kind":"group_lucky","group_id":7,"count":3,"amount":"1e2"}`, u1),
		bad("create empty money", "POST", create, `{"kind":"group_lucky","group_id":7,"count":3,"amount":""}`, u1),
		bad("create huge money", "POST", create, `{"kind":"group_lucky","group_id":7,"count":3,"amount":"99999999999999999999.99"}`, u1),
		bad("create missing money", "POST", create, `{"kind":"group_lucky","group_id":7,"count":3}`, u1),
		bad("create string group id", "POST", create, `{"kind":"group_lucky","group_id":"7","count":3,"amount":"5.00"}`, u1),
		bad("create float group id", "POST", create, `{"kind":"group_lucky","group_id":7.5,"count":3,"amount":"5.00"}`, u1),
		bad("create negative group id", "POST", create, `{"kind":"group_lucky","group_id":-7,"count":3,"amount":"5.00"}`, u1),
		bad("create zero group id", "POST", create, `{"kind":"group_lucky","group_id":0,"count":3,"amount":"5.00"}`, u1),
		bad("create missing group id", "POST", create, `{"kind":"group_lucky","count":3,"amount":"5.00"}`, u1),
		bad("create count 0", "POST", create, `{"kind":"group_lucky","group_id":7,"count":0,"amount":"5.00"}`, u1),
		bad("create count 101", "POST", create, `{"kind":"group_lucky","group_id":7,"count":101,"amount":"500.00"}`, u1),
		bad("create count negative", "POST", create, `{"kind":"group_equal","group_id":7,"count":-1,"amount":"1.00"}`, u1),
		bad("create count string", "POST", create, `{"kind":"group_lucky","group_id":7,"count":"3","amount":"5.00"}`, u1),
		bad("create count float", "POST", create, `{"kind":"group_lucky","group_id":7,"count":2.5,"amount":"5.00"}`, u1),
		bad("create count overflow", "POST", create, `{"kind":"group_lucky","group_id":7,"count":99999999999999999999,"amount":"5.00"}`, u1),
		bad("create missing count", "POST", create, `{"kind":"group_lucky","group_id":7,"amount":"5.00"}`, u1),
		bad("create lucky share below 0.01", "POST", create, `{"kind":"group_lucky","group_id":7,"count":10,"amount":"0.09"}`, u1),
		bad("create equal share of 0", "POST", create, `{"kind":"group_equal","group_id":7,"count":2,"amount":"0"}`, u1),
		bad("create equal share above 200", "POST", create, `{"kind":"group_equal","group_id":7,"count":2,"amount":"200.01"}`, u1),
		bad("create lucky share above 200", "POST", create, `{"kind":"group_lucky","group_id":7,"count":2,"amount":"400.01"}`, u1),
		bad("create single above 200", "POST", create, `{"kind":"single","to_user_id":2,"amount":"200.01"}`, u1),
		bad("create single of 0", "POST", create, `{"kind":"single","to_user_id":2,"amount":"0.00"}`, u1),
		bad("create kind typo", "POST", create, `{"kind":"group_lucy","group_id":7,"count":3,"amount":"5.00"}`, u1),
		bad("create kind of wrong type", "POST", create, `{"kind":1,"group_id":7,"count":3,"amount":"5.00"}`, u1),
		bad("create missing kind", "POST", create, `{"group_id":7,"count":3,"amount":"5.00"}`, u1),
		bad("create greeting of 65 characters", "POST", create, lucky(`,"greeting":"`+strings.Repeat("福", 65)+`"`), u1),
		bad("create greeting of wrong type", "POST", create, lucky(`,"greeting":5`), u1),
		bad("create to_user_id on a group packet", "POST", create, lucky(`,"to_user_id":2`), u1),
		bad("create single without recipient", "POST", create, `{"kind":"single","amount":"5.00"}`, u1),
		bad("create single to oneself", "POST", create, `{"kind":"single","to_user_id":1,"amount":"5.00"}`, u1),
		bad("create single with count", "POST", create, `{"kind":"single","to_user_id":2,"count":1,"amount":"5.00"}`, u1),
		bad("create single with group", "POST", create, `{"kind":"single","to_user_id":2,"group_id":7,"amount":"5.00"}`, u1),
		bad("create single string recipient", "POST", create, `{"kind":"single","to_user_id":"2","amount":"5.00"}`, u1),
		bad("create trailing garbage", "POST", create, lucky(``)+`garbage`, u1),
		bad("create array body", "POST", create, `[]`, u1),
		bad("create not JSON", "POST", create, `kind=single`, u1),
		{"create body over 64 KiB", "POST", create, lucky(`,"greeting":"` + strings.Repeat("x", 70<<10) + `"`), u1, 413, "PAYLOAD_TOO_LARGE"},
		{"create by a non-member", "POST", create, lucky(``), u5, 403, "FORBIDDEN"},

		// User auth.
		{"create without credentials", "POST", create, lucky(``), nil, 401, "UNAUTHENTICATED"},
		{"create with an expired token", "POST", create, lucky(``), bearer(token(hs, jwtSecret, "1", -time.Minute)), 401, "UNAUTHENTICATED"},
		{"create with a token without exp", "POST", create, lucky(``), bearer(token(hs, jwtSecret, "1", 0)), 401, "UNAUTHENTICATED"},
		{"create with a badly signed token", "POST", create, lucky(``), bearer(token(hs, []byte("another-secret-another-secret-!!"), "1", time.Hour)), 401, "UNAUTHENTICATED"},
		{"create with an alg none token", "POST", create, lucky(``), bearer(token(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "1", time.Hour)), 401, "UNAUTHENTICATED"},
		{"create with an HS512 token", "POST", create, lucky(``), bearer(token(jwt.SigningMethodHS512, jwtSecret, "1", time.Hour)), 401, "UNAUTHENTICATED"},
		{"create with a malformed token", "POST", create, lucky(``), bearer("not.a.jwt"), 401, "UNAUTHENTICATED"},
		{"create with a non-numeric subject", "POST", create, lucky(``), bearer(token(hs, jwtSecret, "alice", time.Hour)), 401, "UNAUTHENTICATED"},
		{"create with a zero subject", "POST", create, lucky(``), bearer(token(hs, jwtSecret, "0", time.Hour)), 401, "UNAUTHENTICATED"},
		{"create with a negative subject", "POST", create, lucky(``), bearer(token(hs, jwtSecret, "-1", time.Hour)), 401, "UNAUTHENTICATED"},
		{"create with the admin token", "POST", create, lucky(``), admin(), 401, "UNAUTHENTICATED"},
		{"create with X-User-Id outside dev mode", "POST", create, lucky(``), auth{"X-User-Id": "1"}, 401, "UNAUTHENTICATED"},
		{"balance without credentials", "GET", "/v1/balance", ``, nil, 401, "UNAUTHENTICATED"},

		// Pay.
		{"pay by a non-sender", "POST", pay(unpaid), `{"method":"balance"}`, u2, 403, "FORBIDDEN"},
		{"pay an unknown packet", "POST", pay(999999), `{"method":"balance"}`, u1, 404, "NOT_FOUND"},
		{"pay an open packet", "POST", pay(open), `{"method":"balance"}`, u1, 409, "NOT_PAYABLE"},
		{"pay without the funds", "POST", pay(poor), `{"method":"balance"}`, u2, 409, "INSUFFICIENT_BALANCE"},
		bad("pay unknown method", "POST", pay(unpaid), `{"method":"bitcoin"}`, u1),
		bad("pay third-party method", "POST", pay(unpaid), `{"method":"alipay"}`, u1),
		bad("pay missing method", "POST", pay(unpaid), `{}`, u1),
		bad("pay missing body", "POST", pay(unpaid), ``, u1),
		bad("pay unknown field", "POST", pay(unpaid), `{"method":"balance","amount":"1.00"}`, u1),
		bad("pay path id abc", "POST", pay("abc"), `{"method":"balance"}`, u1),
		bad("pay path id -1", "POST", pay("-1"), `{"method":"balance"}`, u1),
		bad("pay path id 0", "POST", pay("0"), `{"method":"balance"}`, u1),
		{"pay without credentials", "POST", pay(unpaid), `{"method":"balance"}`, nil, 401, "UNAUTHENTICATED"},

		// Grab.
		{"grab by a non-member", "POST", grab(open), ``, u5, 403, "FORBIDDEN"},
		{"grab by an outsider", "POST", grab(open), ``, u9, 403, "FORBIDDEN"},
		{"grab an unknown packet", "POST", grab(999999), ``, u1, 404, "NOT_FOUND"},
		{"grab an unpaid packet", "POST", grab(unpaid), ``, u3, 409, "NOT_OPEN"},
		bad("grab path id abc", "POST", grab("abc"), ``, u1),
		bad("grab path id -1", "POST", grab("-1"), ``, u1),
		bad("grab path id 0", "POST", grab("0"), ``, u1),
		{"grab without credentials", "POST", grab(open), ``, nil, 401, "UNAUTHENTICATED"},

		// Detail.
		{"get an unknown packet", "GET", get(999999), ``, u1, 404, "NOT_FOUND"},
		{"get by an outsider", "GET", get(open), ``, u9, 403, "FORBIDDEN"},
		bad("get path id abc", "GET", get("abc"), ``, u1),
		bad("get path id -1", "GET", get("-1"), ``, u1),
		bad("get path id 0", "GET", get("0"), ``, u1),

		// Routing.
		{"unknown route", "GET", "/v1/nope", ``, u1, 404, "NOT_FOUND"},
		{"trailing slash", "GET", "/v1/balance/", ``, u1, 404, "NOT_FOUND"},
		{"wrong method", "DELETE", get(open), ``, u1, 405, "METHOD_NOT_ALLOWED"},
	}

	if f.snapshot(t, e).nextExists {
		t.Fatal("fixture: the next packet id exists already")
	}
	e.runRejects(t, cases, func(t *testing.T) any { return f.snapshot(t, e) })
}

// TestDevAuth checks X-User-Id in dev mode, and that a bad one is still 401.
func TestDevAuth(t *testing.T) {
	e := setup(t, devAuth)
	for _, c := range []struct {
		header string
		status int
	}{{"42", 200}, {"0", 401}, {"-1", 401}, {"abc", 401}, {"4.2", 401}, {"", 401}} {
		h := auth{}
		if c.header != "" {
			h["X-User-Id"] = c.header
		}
		r := e.do(t, "GET", "/v1/balance", "", h)
		if r.status != c.status {
			t.Fatalf("X-User-Id %q: status %d, want %d: %s", c.header, r.status, c.status, r.body)
		}
	}
	// A user identity is not admin, whatever the mode.
	if r := e.do(t, "PUT", "/v1/admin/groups/7/members", `{"user_ids":[1]}`, auth{"X-User-Id": "42"}); r.status != nethttp.StatusForbidden {
		t.Fatalf("dev user on admin: %d %s", r.status, r.body)
	}
}

// TestAdminClosedWithoutToken: an unset admin token must not let an empty bearer in.
func TestAdminClosedWithoutToken(t *testing.T) {
	e := setup(t, func(c *grabhttp.Config) { c.AdminToken = "" })
	for _, h := range []auth{nil, {"Authorization": "Bearer "}, {"Authorization": "Bearer"}, {"Authorization": "Bearer  "}} {
		if r := e.do(t, "PUT", "/v1/admin/groups/7/members", `{"user_ids":[1]}`, h); r.status != nethttp.StatusUnauthorized {
			t.Fatalf("%v: status %d: %s", h, r.status, r.body)
		}
	}
}

func seq(n int) string {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		if i > 1 {
			b.WriteByte(',')
		}
		fmt.Fprint(&b, i)
	}
	return b.String()
}
