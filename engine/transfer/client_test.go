package transfer_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/grab-engine/grab/engine/transfer"
)

var (
	secret = []byte("test-secret")
	award  = transfer.Transfer{OutTradeNo: "award-7-42", UserID: 42, Amount: 123, Memo: "campaign 7"}
)

// canned serves one fixed answer, after checking that the client signed
// what it sent, path prefix included.
func canned(t *testing.T, status int, body string) *transfer.Client {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/wallet/v1/transfers") {
			t.Errorf("request to %s, want it under the base URL's /wallet", r.URL.Path)
		}
		sent, _ := io.ReadAll(r.Body)
		if err := transfer.VerifyRequest(secret, r, sent, time.Now()); err != nil {
			t.Errorf("request to %s does not verify: %v", r.URL.Path, err)
		}
		w.WriteHeader(status)
		io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return transfer.NewClient(srv.URL+"/wallet/", secret, time.Second, srv.Client())
}

// answer is one canned answer and what the client must make of it.
type answer struct {
	name   string
	status int
	body   string
	want   transfer.Result
	err    error // nil, transfer.ErrConflict, or errUnknown
}

const applied = `{"out_trade_no":"award-7-42","status":"succeeded","transfer_id":"T1","user_id":42,"amount":"1.23","duplicate":true}`

// TestTransferAnswers: only a well-formed answer about this very payout is a
// result; only the service's own conflict is a conflict; everything else
// leaves the outcome unknown.
func TestTransferAnswers(t *testing.T) {
	for _, tc := range []answer{
		{"applied", 200, applied, transfer.Result{Outcome: transfer.Succeeded, TransferID: "T1", Amount: 123, Duplicate: true}, nil},
		{"conflict", 409, `{"error":"conflict"}`, transfer.Result{}, transfer.ErrConflict},
		{"applied for another amount", 200, `{"out_trade_no":"award-7-42","status":"succeeded","transfer_id":"T1","user_id":42,"amount":"1.24"}`, transfer.Result{}, transfer.ErrConflict},
		{"applied for another user", 200, `{"out_trade_no":"award-7-42","status":"succeeded","transfer_id":"T1","user_id":43,"amount":"1.23"}`, transfer.Result{}, transfer.ErrConflict},
		{"409 from a proxy", 409, `<html>conflict</html>`, transfer.Result{}, errUnknown},
		{"unavailable", 503, `{"error":"unavailable"}`, transfer.Result{}, errUnknown},
		{"gateway timeout", 504, ``, transfer.Result{}, errUnknown},
		{"unparsable", 200, `{"out_trade_no":`, transfer.Result{}, errUnknown},
		{"about another number", 200, `{"out_trade_no":"award-7-43","status":"succeeded","transfer_id":"T1","user_id":42,"amount":"1.23"}`, transfer.Result{}, errUnknown},
		{"not succeeded", 200, `{"out_trade_no":"award-7-42","status":"pending","transfer_id":"T1","user_id":42,"amount":"1.23"}`, transfer.Result{}, errUnknown},
		{"no transfer id", 200, `{"out_trade_no":"award-7-42","status":"succeeded","user_id":42,"amount":"1.23"}`, transfer.Result{}, errUnknown},
		{"amount as a number", 200, `{"out_trade_no":"award-7-42","status":"succeeded","transfer_id":"T1","user_id":42,"amount":1.23}`, transfer.Result{}, errUnknown},
		{"bad request", 400, `{"error":"malformed"}`, transfer.Result{}, errUnknown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := canned(t, tc.status, tc.body).Transfer(context.Background(), award)
			checkAnswer(t, got, err, tc.want, tc.err)
		})
	}
}

func TestQueryAnswers(t *testing.T) {
	for _, tc := range []answer{
		// A query applies nothing, whatever the service says of duplicates.
		{"applied", 200, applied, transfer.Result{Outcome: transfer.Succeeded, TransferID: "T1", Amount: 123}, nil},
		{"never applied", 404, `{"error":"not_found"}`, transfer.Result{Outcome: transfer.Unknown}, nil},
		// A bare 404 may be a wrong base URL: it must not make a paid number look unpaid.
		{"404 from a proxy", 404, `404 page not found`, transfer.Result{}, errUnknown},
		{"unavailable", 503, `{"error":"unavailable"}`, transfer.Result{}, errUnknown},
		{"about another number", 200, `{"out_trade_no":"x","status":"succeeded","transfer_id":"T1","user_id":42,"amount":"1.23"}`, transfer.Result{}, errUnknown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := canned(t, tc.status, tc.body).QueryTransfer(context.Background(), award.OutTradeNo)
			checkAnswer(t, got, err, tc.want, tc.err)
		})
	}
}

var errUnknown = errors.New("any error but a conflict")

func checkAnswer(t *testing.T, got transfer.Result, err error, want transfer.Result, wantErr error) {
	t.Helper()
	switch {
	case wantErr == nil && err != nil,
		wantErr == errUnknown && (err == nil || errors.Is(err, transfer.ErrConflict)),
		wantErr == transfer.ErrConflict && !errors.Is(err, transfer.ErrConflict):
		t.Fatalf("err = %v, want %v", err, wantErr)
	}
	if got != want {
		t.Errorf("result = %+v, want %+v", got, want)
	}
}

func TestTransportFailureIsUnknown(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close() // nothing listens any more
	c := transfer.NewClient(srv.URL, secret, time.Second, nil)
	if _, err := c.Transfer(context.Background(), award); err == nil || errors.Is(err, transfer.ErrConflict) {
		t.Errorf("transfer err = %v, want an outcome-unknown error", err)
	}
	if _, err := c.QueryTransfer(context.Background(), award.OutTradeNo); err == nil {
		t.Error("query of a dead service answered")
	}
}

// TestSignatureFormat pins the signed string, so another implementation of
// the service can check it.
func TestSignatureFormat(t *testing.T) {
	body := `{"out_trade_no":"award-7-42","user_id":42,"amount":"1.23"}`
	r := httptest.NewRequest(http.MethodPost, "http://wallet/api/v1/transfers", nil)
	transfer.SignRequest(secret, r, []byte(body), time.Unix(1700000000, 0))

	m := hmac.New(sha256.New, secret)
	io.WriteString(m, "POST\n/api/v1/transfers\n1700000000\n"+body)
	if got, want := r.Header.Get("X-Grab-Signature"), hex.EncodeToString(m.Sum(nil)); got != want {
		t.Errorf("signature = %s, want %s", got, want)
	}
	if got := r.Header.Get("X-Grab-Timestamp"); got != "1700000000" {
		t.Errorf("timestamp = %s, want 1700000000", got)
	}
}

func TestAmounts(t *testing.T) {
	for s, fen := range map[string]int64{"0.01": 1, "1.23": 123, "12.30": 1230, "0.00": 0, "9999999999.99": 999999999999} {
		if got, err := transfer.ParseAmount(s); err != nil || got != fen {
			t.Errorf("ParseAmount(%q) = %d, %v; want %d", s, got, err, fen)
		}
		if wire := transfer.NewRequest(transfer.Transfer{Amount: fen}).Amount; wire != s {
			t.Errorf("%d fen travels as %q, want %q", fen, wire, s)
		}
	}
	for _, s := range []string{"", "1", "1.2", "1.234", "-1.23", "+1.23", "01.23", "1e2", " 1.23", "1,23", "10000000000.00"} {
		if _, err := transfer.ParseAmount(s); !errors.Is(err, transfer.ErrMalformed) {
			t.Errorf("ParseAmount(%q) err = %v, want ErrMalformed", s, err)
		}
	}
}
