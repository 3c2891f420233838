package http_test

import (
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	grabhttp "github.com/grab-engine/grab/http"
)

// An error outside the contract is INTERNAL with a message that says nothing.
func TestUnmappedErrorIsInternal(t *testing.T) {
	e := setup(t)
	e.db.Close()
	r := e.do(t, "GET", "/v1/balance", ``, user(1))
	if r.status != 500 || r.errorCode(t) != "INTERNAL" || !strings.Contains(string(r.body), `"internal error"`) {
		t.Fatalf("%d %s", r.status, r.body)
	}
}

// A panic is INTERNAL JSON, never a stack trace.
func TestPanicIsInternal(t *testing.T) {
	h := grabhttp.New(nil, grabhttp.Config{DevAuth: true}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	req := httptest.NewRequest("GET", "/v1/balance", nil)
	req.Header.Set("X-User-Id", "1")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	r := response{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
	if r.status != 500 || r.errorCode(t) != "INTERNAL" || strings.Contains(string(r.body), "goroutine") {
		t.Fatalf("%d %s", r.status, r.body)
	}
}
