package transfer

import (
	"github.com/grab-engine/grab/engine/internal/jsonreply"

	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// maxReply bounds what the client reads of an answer; real ones are tiny.
const maxReply = 64 << 10

// Client is the wallet service's HTTP client. It implements
// Service and retries nothing itself: the payout sweeper
// decides when to query or try again.
type Client struct {
	base    string
	secret  []byte
	timeout time.Duration
	http    *http.Client
}

var _ Service = (*Client)(nil)

// NewClient returns a client of the service at baseURL (scheme, host and
// any path prefix, e.g. "https://wallet.internal/api"). timeout bounds each
// call on top of its ctx; zero leaves it to ctx. A nil httpClient means
// http.DefaultClient.
func NewClient(baseURL string, secret []byte, timeout time.Duration, httpClient *http.Client) *Client {
	if httpClient == nil {
		httpClient = http.DefaultClient
	}
	return &Client{base: strings.TrimSuffix(baseURL, "/"), secret: secret, timeout: timeout, http: httpClient}
}

// Transfer implements Service. Any failure to get a readable
// answer is an error, meaning the outcome is unknown; a conflict wraps
// ErrConflict.
func (c *Client) Transfer(ctx context.Context, t Transfer) (Result, error) {
	body, err := json.Marshal(NewRequest(t))
	if err != nil {
		return Result{}, fmt.Errorf("transfer %s: %w", t.OutTradeNo, err)
	}
	status, reply, err := c.do(ctx, http.MethodPost, PathTransfers, body)
	if err != nil {
		return Result{}, fmt.Errorf("transfer %s: %w", t.OutTradeNo, err)
	}
	switch {
	case status == http.StatusOK:
		rep, res, err := readReply(t.OutTradeNo, reply)
		if err != nil {
			return Result{}, fmt.Errorf("transfer %s: %w", t.OutTradeNo, err)
		}
		// The service must answer 409 for this; a 200 that names other
		// details is the same fact and must not pass for our payout.
		if rep.UserID != t.UserID || res.Amount != t.Amount {
			return Result{}, fmt.Errorf("transfer %s: applied to user %d for %s: %w",
				t.OutTradeNo, rep.UserID, rep.Amount, ErrConflict)
		}
		return res, nil
	case status == http.StatusConflict && jsonreply.Code(reply) == CodeConflict:
		return Result{}, fmt.Errorf("transfer %s: %w", t.OutTradeNo, ErrConflict)
	}
	return Result{}, fmt.Errorf("transfer %s: %w", t.OutTradeNo, jsonreply.Unexpected(status, reply))
}

// QueryTransfer implements Service. Only the service's own
// not_found answer means TransferUnknown: a bare 404 from a proxy or a wrong
// base URL must not make a paid number look unpaid.
func (c *Client) QueryTransfer(ctx context.Context, outTradeNo string) (Result, error) {
	status, reply, err := c.do(ctx, http.MethodGet, PathTransfers+"/"+url.PathEscape(outTradeNo), nil)
	if err != nil {
		return Result{}, fmt.Errorf("query transfer %s: %w", outTradeNo, err)
	}
	switch {
	case status == http.StatusOK:
		_, res, err := readReply(outTradeNo, reply)
		if err != nil {
			return Result{}, fmt.Errorf("query transfer %s: %w", outTradeNo, err)
		}
		res.Duplicate = false // a query applies nothing
		return res, nil
	case status == http.StatusNotFound && jsonreply.Code(reply) == CodeNotFound:
		return Result{Outcome: Unknown}, nil
	}
	return Result{}, fmt.Errorf("query transfer %s: %w", outTradeNo, jsonreply.Unexpected(status, reply))
}

// do sends one signed request and returns the status and body of its answer.
func (c *Client) do(ctx context.Context, method, path string, body []byte) (int, []byte, error) {
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	SignRequest(c.secret, req, body, time.Now())
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	reply, err := io.ReadAll(io.LimitReader(resp.Body, maxReply))
	if err != nil {
		return 0, nil, fmt.Errorf("reading the %d answer: %w", resp.StatusCode, err)
	}
	return resp.StatusCode, reply, nil
}

// readReply reads a 200 answer about outTradeNo; anything off is an error.
func readReply(outTradeNo string, body []byte) (Reply, Result, error) {
	var rep Reply
	if err := json.Unmarshal(body, &rep); err != nil {
		return Reply{}, Result{}, jsonreply.Unexpected(http.StatusOK, body)
	}
	if rep.OutTradeNo != outTradeNo || rep.Status != StatusSucceeded || rep.TransferID == "" {
		return Reply{}, Result{}, jsonreply.Unexpected(http.StatusOK, body)
	}
	fen, err := ParseAmount(rep.Amount)
	if err != nil {
		return Reply{}, Result{}, jsonreply.Unexpected(http.StatusOK, body)
	}
	return rep, Result{Outcome: Succeeded, TransferID: rep.TransferID,
		Amount: fen, Duplicate: rep.Duplicate}, nil
}
