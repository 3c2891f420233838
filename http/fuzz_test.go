package http_test

import (
	"context"
	"strings"
	"testing"
)

// FuzzCreatePacket feeds arbitrary bodies to the create handler: every
// answer is 201 or a 4xx with an error body, never a 5xx or a panic.
func FuzzCreatePacket(f *testing.F) {
	e := setup(f, devAuth)
	if _, err := e.Packets.SetGroupMembers(context.Background(), 7, []int64{1, 2, 3}); err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{
		`{"kind":"group_lucky","group_id":7,"count":10,"amount":"20.00","greeting":"恭喜发财"}`,
		`{"kind":"group_equal","group_id":7,"count":10,"amount":"2.00"}`,
		`{"kind":"single","to_user_id":9,"amount":"5.00"}`,
		`{"kind":"single","to_user_id":9,"amount":"5"}`,
		`{"kind":"group_lucky","group_id":7,"count":100,"amount":"20000.00"}`,
		`{"kind":"group_lucky","group_id":7,"count":101,"amount":"20.00"}`,
		`{"kind":"group_lucky","group_id":7,"count":0,"amount":"20.00"}`,
		`{"kind":"group_lucky","group_id":8,"count":3,"amount":"1.00"}`,
		`{"kind":"group_lucky","group_id":"7","count":3,"amount":20}`,
		`{"kind":"group_lucky","group_id":7.5,"count":-3,"amount":"1e2"}`,
		`{"kind":"group_equal","group_id":7,"count":3,"amount":"9999999999.99"}`,
		`{"kind":"single","to_user_id":1,"amount":"0.01"}`,
		`{"kind":"x","amount":"-1"} trailing`,
		`{"greeting":"` + strings.Repeat("福", 65) + `"}`,
		`{"kind":"single","to_user_id":9223372036854775807,"amount":"0.01"}`,
		`{"kind":"group_lucky","group_id":9223372036854775808,"count":1,"amount":"0.01"}`,
		`[]`, `null`, `""`, `{}`, `{"a":`, "\x00", ``,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, body string) {
		r := e.do(t, "POST", "/v1/packets", body, auth{"X-User-Id": "1"})
		switch {
		case r.status == 201:
		case r.status >= 400 && r.status < 500:
			r.errorCode(t)
		default:
			t.Fatalf("body %q: status %d: %s", body, r.status, r.body)
		}
	})
}
