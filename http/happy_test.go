package http_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	nethttp "net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/grab-engine/grab/engine/money"
	grabhttp "github.com/grab-engine/grab/http"

	"github.com/grab-engine/grab/engine/packet"

	"github.com/grab-engine/grab/engine/enginetest"
)

var moneyRE = regexp.MustCompile(`^[0-9]+\.[0-9]{2}$`)

// keys checks that a JSON object has exactly the given fields.
func keys(t *testing.T, what string, m map[string]any, want ...string) {
	t.Helper()
	got := make([]string, 0, len(m))
	for k := range m {
		got = append(got, k)
	}
	sort.Strings(got)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Fatalf("%s fields = %v, want %v", what, got, want)
	}
}

func fen(t *testing.T, what string, v any) int64 {
	t.Helper()
	s, ok := v.(string)
	if !ok || !moneyRE.MatchString(s) {
		t.Fatalf("%s = %#v, want a two-decimal string", what, v)
	}
	fen, err := money.Parse(s)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return fen
}

func integer(t *testing.T, what string, v any) int64 {
	t.Helper()
	n, ok := v.(json.Number)
	if !ok {
		t.Fatalf("%s = %#v, want an integer", what, v)
	}
	i, err := n.Int64()
	if err != nil {
		t.Fatalf("%s = %v, want an integer", what, n)
	}
	return i
}

func timestamp(t *testing.T, what string, v any) time.Time {
	t.Helper()
	s, ok := v.(string)
	if !ok {
		t.Fatalf("%s = %#v, want an RFC 3339 string", what, v)
	}
	ts, err := time.Parse(time.RFC3339, s)
	if err != nil || !strings.HasSuffix(s, "Z") {
		t.Fatalf("%s = %q, want RFC 3339 in UTC (%v)", what, s, err)
	}
	return ts
}

func expect(t *testing.T, r response, status int) map[string]any {
	t.Helper()
	if r.status != status {
		t.Fatalf("status = %d, want %d: %s", r.status, status, r.body)
	}
	return r.object(t)
}

var packetFields = []string{"packet_id", "kind", "sender_id", "group_id", "to_user_id", "count", "total", "greeting",
	"status", "pay_status", "created_at", "expires_at", "finished_at", "remaining_count", "remaining_amount",
	"refunded_amount", "grabs", "my_grab"}

func TestHappyPath(t *testing.T) {
	e := setup(t)
	e.startWriter(t)

	// Accounts and groups.
	m := expect(t, e.do(t, "PUT", "/v1/admin/groups/7/members", `{"user_ids":[1,2,3,4,4]}`, admin()), 200)
	keys(t, "members", m, "group_id", "members")
	if integer(t, "group_id", m["group_id"]) != 7 || integer(t, "members", m["members"]) != 4 {
		t.Fatalf("members = %v", m)
	}
	for range 2 { // the replay of the same ref changes nothing
		m = expect(t, e.do(t, "POST", "/v1/admin/accounts/1/deposit", `{"amount":"100","ref":"dep-1"}`, admin()), 200)
		keys(t, "deposit", m, "user_id", "balance")
		if integer(t, "user_id", m["user_id"]) != 1 || m["balance"] != "100.00" {
			t.Fatalf("deposit = %v", m)
		}
	}

	// Create.
	p := expect(t, e.do(t, "POST", "/v1/packets",
		`{"kind":"group_lucky","group_id":7,"count":3,"amount":"20.00","greeting":"恭喜发财"}`, user(1)), 201)
	keys(t, "packet", p, packetFields...)
	id := integer(t, "packet_id", p["packet_id"])
	if p["kind"] != "group_lucky" || integer(t, "sender_id", p["sender_id"]) != 1 || integer(t, "group_id", p["group_id"]) != 7 ||
		p["to_user_id"] != nil || integer(t, "count", p["count"]) != 3 || p["total"] != "20.00" || p["greeting"] != "恭喜发财" ||
		p["status"] != "unpaid" || p["pay_status"] != "unpaid" || p["expires_at"] != nil || p["finished_at"] != nil ||
		integer(t, "remaining_count", p["remaining_count"]) != 3 || p["remaining_amount"] != "20.00" ||
		p["refunded_amount"] != "0.00" || p["my_grab"] != nil {
		t.Fatalf("created packet = %v", p)
	}
	timestamp(t, "created_at", p["created_at"])
	if g, ok := p["grabs"].([]any); !ok || len(g) != 0 {
		t.Fatalf("grabs = %#v, want []", p["grabs"])
	}

	// Pay.
	p = expect(t, e.do(t, "POST", fmt.Sprintf("/v1/packets/%d/pay", id), `{"method":"balance"}`, user(1)), 200)
	keys(t, "paid packet", p, packetFields...)
	if p["status"] != "open" || p["pay_status"] != "paid" {
		t.Fatalf("paid packet = %v", p)
	}
	if exp := timestamp(t, "expires_at", p["expires_at"]); exp.Before(timestamp(t, "created_at", p["created_at"]).Add(23 * time.Hour)) {
		t.Fatalf("expires_at = %v", exp)
	}
	m = expect(t, e.do(t, "GET", "/v1/balance", ``, user(1)), 200)
	keys(t, "balance", m, "user_id", "balance")
	if m["balance"] != "80.00" {
		t.Fatalf("sender balance after pay = %v", m)
	}

	// Grabs.
	grabURL := fmt.Sprintf("/v1/packets/%d/grab", id)
	got := map[int64]int64{} // user -> fen
	var sum int64
	for i, u := range []int64{2, 3, 4} {
		g := expect(t, e.do(t, "POST", grabURL, ``, user(u)), 200)
		keys(t, "grab", g, "packet_id", "amount", "seq", "repeat", "credited")
		if integer(t, "packet_id", g["packet_id"]) != id || integer(t, "seq", g["seq"]) != int64(i+1) ||
			g["repeat"] != false || g["credited"] != true { // paid by balance: credited, by the writer
			t.Fatalf("grab by %d = %v", u, g)
		}
		got[u] = fen(t, "amount", g["amount"])
		sum += got[u]
		if u == 2 {
			again := expect(t, e.do(t, "POST", grabURL, ``, user(2)), 200)
			if again["repeat"] != true || again["amount"] != g["amount"] || integer(t, "seq", again["seq"]) != 1 {
				t.Fatalf("repeat grab = %v, first %v", again, g)
			}
		}
	}
	if sum != 2000 {
		t.Fatalf("shares sum to %d fen", sum)
	}
	r := e.do(t, "POST", grabURL, ``, user(1))
	if r.status != 409 || r.errorCode(t) != "SOLD_OUT" {
		t.Fatalf("grab after the last share: %d %s", r.status, r.body)
	}

	// Detail, as a grabber: grabs in seq order, my_grab, best once finished.
	p = expect(t, e.do(t, "GET", fmt.Sprintf("/v1/packets/%d", id), ``, user(3)), 200)
	keys(t, "detail", p, packetFields...)
	if p["status"] != "finished" || integer(t, "remaining_count", p["remaining_count"]) != 0 || p["remaining_amount"] != "0.00" {
		t.Fatalf("detail = %v", p)
	}
	timestamp(t, "finished_at", p["finished_at"])
	grabs := p["grabs"].([]any)
	if len(grabs) != 3 {
		t.Fatalf("grabs = %v", grabs)
	}
	best := 0
	for i, gv := range grabs {
		g := gv.(map[string]any)
		keys(t, "detail grab", g, "user_id", "amount", "seq", "grabbed_at", "best")
		u := integer(t, "user_id", g["user_id"])
		if integer(t, "seq", g["seq"]) != int64(i+1) || u != int64(i+2) || fen(t, "amount", g["amount"]) != got[u] {
			t.Fatalf("grab %d = %v", i, g)
		}
		timestamp(t, "grabbed_at", g["grabbed_at"])
		if g["best"] == true {
			best++
		}
	}
	if best != 1 {
		t.Fatalf("%d grabs marked best, want 1", best)
	}
	my, ok := p["my_grab"].(map[string]any)
	if !ok {
		t.Fatalf("my_grab = %#v", p["my_grab"])
	}
	keys(t, "my_grab", my, "amount", "seq", "credited")
	if integer(t, "my_grab.seq", my["seq"]) != 2 || fen(t, "my_grab.amount", my["amount"]) != got[3] {
		t.Fatalf("my_grab = %v", my)
	}
	// The sender did not grab: my_grab is null.
	if p = expect(t, e.do(t, "GET", fmt.Sprintf("/v1/packets/%d", id), ``, user(1)), 200); p["my_grab"] != nil {
		t.Fatalf("sender's my_grab = %v", p["my_grab"])
	}

	// Balances once the writer has made the grabs durable.
	for u, want := range got {
		enginetest.WaitFor(t, fmt.Sprintf("user %d's balance to be %s", u, money.Format(want)), func() bool {
			b := expect(t, e.do(t, "GET", "/v1/balance", ``, user(u)), 200)
			return fen(t, "balance", b["balance"]) == want
		})
	}
	p = expect(t, e.do(t, "GET", fmt.Sprintf("/v1/packets/%d", id), ``, user(3)), 200)
	if my := p["my_grab"].(map[string]any); my["credited"] != true {
		t.Fatalf("my_grab after the writer = %v", my)
	}

	// A single packet, end to end.
	p = expect(t, e.do(t, "POST", "/v1/packets", `{"kind":"single","to_user_id":9,"amount":"5"}`, user(1)), 201)
	sid := integer(t, "packet_id", p["packet_id"])
	if p["group_id"] != nil || integer(t, "to_user_id", p["to_user_id"]) != 9 || integer(t, "count", p["count"]) != 1 ||
		p["total"] != "5.00" || p["greeting"] != packet.DefaultGreeting {
		t.Fatalf("single = %v", p)
	}
	expect(t, e.do(t, "POST", fmt.Sprintf("/v1/packets/%d/pay", sid), `{"method":"balance"}`, user(1)), 200)
	if r := e.do(t, "POST", fmt.Sprintf("/v1/packets/%d/grab", sid), ``, user(2)); r.status != 403 {
		t.Fatalf("grab of another's single packet: %d %s", r.status, r.body)
	}
	g := expect(t, e.do(t, "POST", fmt.Sprintf("/v1/packets/%d/grab", sid), ``, user(9)), 200)
	if g["amount"] != "5.00" || integer(t, "seq", g["seq"]) != 1 {
		t.Fatalf("single grab = %v", g)
	}
	if b := expect(t, e.do(t, "GET", "/v1/balance", ``, user(1)), 200); b["balance"] != "75.00" {
		t.Fatalf("sender balance = %v", b)
	}

	// Operations.
	metrics := string(e.do(t, "GET", "/metrics", ``, nil).body)
	for _, want := range []string{`grab_grabs_total{code="OK"} 5`, `grab_grabs_total{code="SOLD_OUT"} 1`,
		`grab_grabs_total{code="FORBIDDEN"} 1`, "grab_grab_latency_seconds_count 7", "grab_writer_lag_seconds",
		`grab_http_requests_total{method="POST",route="/v1/packets",status="201"} 2`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if r := e.do(t, "GET", "/healthz", ``, nil); r.status != 200 {
		t.Fatalf("healthz %d", r.status)
	}
	if r := e.do(t, "GET", "/readyz", ``, nil); r.status != 200 {
		t.Fatalf("readyz %d %s", r.status, r.body)
	}
}

// A method the API does not know is counted as OTHER: clients choose
// methods, and each label value would be a series kept for good.
func TestRequestMetricsBoundTheMethods(t *testing.T) {
	e := setup(t)
	for _, m := range []string{"BREW", "WHEN", "GET"} {
		e.do(t, m, "/healthz", ``, nil)
	}
	metrics := string(e.do(t, "GET", "/metrics", ``, nil).body)
	if !strings.Contains(metrics, `grab_http_requests_total{method="OTHER",route="unmatched",status="405"} 2`) ||
		!strings.Contains(metrics, `grab_http_requests_total{method="GET",route="/healthz",status="200"} 1`) ||
		strings.Contains(metrics, "BREW") {
		t.Fatalf("request metrics:\n%s", metrics)
	}
}

// Probes that send HEAD get GET's status and no body (over a real
// connection, where net/http drops a HEAD answer's body).
func TestProbesAnswerHEAD(t *testing.T) {
	e := setup(t)
	srv := httptest.NewServer(e.h)
	defer srv.Close()
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 503} { // no writer runs: not ready
		req, _ := nethttp.NewRequest(nethttp.MethodHead, srv.URL+path, nil)
		res, err := nethttp.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != want || len(body) != 0 {
			t.Errorf("HEAD %s: %d with %d bytes; want %d and none", path, res.StatusCode, len(body), want)
		}
	}
}

func TestReadyzWithoutWriter(t *testing.T) {
	e := setup(t)
	r := e.do(t, "GET", "/readyz", ``, nil)
	if r.status != 503 || !strings.Contains(string(r.body), "writer") {
		t.Fatalf("readyz without a writer: %d %s", r.status, r.body)
	}
}

// A failing Config.Ready check (a stuck event relay) makes /readyz answer
// 503 with its reason; passing ones leave it ready.
func TestReadyzChecks(t *testing.T) {
	stuck := errors.New("outbox: relay stuck: oldest of 3 unpublished messages waits for 2m0s")
	var failing atomic.Bool
	e := setup(t, func(c *grabhttp.Config) {
		c.Ready = append(c.Ready, func(context.Context) error { return nil }, func(context.Context) error {
			if failing.Load() {
				return stuck
			}
			return nil
		})
	})
	e.startWriter(t)
	if r := e.do(t, "GET", "/readyz", ``, nil); r.status != 200 {
		t.Fatalf("readyz %d %s", r.status, r.body)
	}
	failing.Store(true)
	r := e.do(t, "GET", "/readyz", ``, nil)
	if r.status != 503 || !strings.Contains(string(r.body), stuck.Error()) {
		t.Fatalf("readyz with a stuck relay: %d %s", r.status, r.body)
	}
}

func TestOpenAPI(t *testing.T) {
	e := setup(t)
	doc := expect(t, e.do(t, "GET", "/openapi.json", ``, nil), 200)
	if doc["openapi"] != "3.0.3" {
		t.Fatalf("openapi = %v", doc["openapi"])
	}
	paths, _ := doc["paths"].(map[string]any)
	for _, p := range []string{"/v1/admin/accounts/{user_id}/deposit", "/v1/admin/groups/{group_id}/members", "/v1/balance",
		"/v1/packets", "/v1/packets/{id}/pay", "/v1/packets/{id}/grab", "/v1/packets/{id}", "/healthz", "/readyz", "/metrics"} {
		if _, ok := paths[p]; !ok {
			t.Errorf("openapi.json lacks %s", p)
		}
	}
	// Every error code the server can answer is documented.
	body := string(e.do(t, "GET", "/openapi.json", ``, nil).body)
	for _, code := range []string{"INVALID_ARGUMENT", "UNAUTHENTICATED", "FORBIDDEN", "NOT_FOUND", "INSUFFICIENT_BALANCE",
		"NOT_PAYABLE", "NOT_OPEN", "SOLD_OUT", "EXPIRED", "BUSY", "INTERNAL", "IDEMPOTENCY_CONFLICT", "PAYLOAD_TOO_LARGE",
		"METHOD_NOT_ALLOWED"} {
		if !strings.Contains(body, `"`+code+`"`) {
			t.Errorf("openapi.json lacks code %s", code)
		}
	}
}
