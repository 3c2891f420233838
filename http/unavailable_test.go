package http_test

import (
	"fmt"
	"testing"

	"github.com/grab-engine/grab"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// Each reply with which Redis says it cannot serve now is BUSY (503,
// Retry-After: 1) on a grab, a stock call and a TCC branch; a reply that
// will not go away by waiting stays INTERNAL. (The same against real
// servers, stopped and loading: redis_faults_test.go.)
func TestRedisRepliesMapToBusy(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	e := setupDeps(t, func(d *grab.Deps) { d.Redis = rdb })
	f := newFaultFixture(t, e)

	requests := []struct {
		name, method, path, body string
		auth                     auth
	}{
		{"packet grab", "POST", fmt.Sprintf("/v1/packets/%d/grab", f.packet), ``, user(2)},
		{"campaign grab", "POST", fmt.Sprintf("/v1/campaigns/%d/grab", f.campaign), ``, user(2)},
		{"stock deduct", "POST", "/v1/stock/deduct", orderBody(`"o-1"`, line{"high_seas", f.sku, 1}), admin()},
		{"tcc try", "POST", tccURL("try", "g1", "01"), `{"items":` + itemsJSON(line{"high_seas", f.sku, 1}) + `}`, admin()},
		{"tcc confirm", "POST", tccURL("confirm", "g1", "01"), `{"items":` + itemsJSON(line{"high_seas", f.sku, 1}) + `}`, admin()},
	}
	for _, tc := range []struct {
		reply  string
		status int
	}{
		{"LOADING Redis is loading the dataset in memory", 503},
		{"READONLY You can't write against a read only replica.", 503},
		{"MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.", 503},
		{"CLUSTERDOWN The cluster is down", 503},
		{"TRYAGAIN Multiple keys request during rehashing of slot", 503},
		{"BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.", 503},
		{"ERR max number of clients reached", 503},
		{"WRONGTYPE Operation against a key holding the wrong kind of value", 500},
		{"ERR unknown command", 500},
	} {
		t.Run(tc.reply, func(t *testing.T) {
			mr.SetError(tc.reply)
			defer mr.SetError("")
			for _, rq := range requests {
				r := e.do(t, rq.method, rq.path, rq.body, rq.auth)
				if r.status != tc.status {
					t.Errorf("%s: %d, want %d: %s", rq.name, r.status, tc.status, r.body)
					continue
				}
				if tc.status == 503 {
					if code := r.errorCode(t); code != "BUSY" {
						t.Errorf("%s: code %s", rq.name, code)
					}
					if ra := r.header.Get("Retry-After"); ra != "1" {
						t.Errorf("%s: Retry-After %q", rq.name, ra)
					}
				}
			}
			if tc.status == 503 {
				if r := e.do(t, "GET", "/readyz", ``, nil); r.status != 503 || r.header.Get("Retry-After") != "1" {
					t.Errorf("readyz: %d (Retry-After %q) %s", r.status, r.header.Get("Retry-After"), r.body)
				}
			}
		})
	}
	// And back to normal.
	expect(t, e.do(t, "POST", fmt.Sprintf("/v1/packets/%d/grab", f.packet), ``, user(2)), 200)
}
