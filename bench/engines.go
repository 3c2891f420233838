package bench

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/grab-engine/grab/engine/money"

	"github.com/grab-engine/grab/engine/packet"

	"github.com/go-sql-driver/mysql"
	"github.com/jmoiron/sqlx"
	"github.com/redis/go-redis/v9"

	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/engine/errs"
	"github.com/grab-engine/grab/lua"
	"github.com/grab-engine/grab/store"
)

// Engine names, in the order a run compares them.
const (
	EngineRaw    = "raw"
	EngineEngine = "engine"
	// EngineSync is the campaign scenario's alone: the engine in the sync
	// payout mode, a baseline for the engine's async one.
	EngineSync      = "engine-sync"
	EngineHTTP      = "http"
	EngineMySQLLock = "mysql-lock"
)

// AllEngines is the default comparison, and the engines every scenario runs.
var AllEngines = []string{EngineRaw, EngineEngine, EngineHTTP, EngineMySQLLock}

// An EngineLister is a Scenario that runs engines besides AllEngines
// (campaign: engine-sync). Engines is its default comparison, every engine
// it runs.
type EngineLister interface {
	Engines() []string
}

// DefaultEngines is what Run compares in scenario s when Config.Engines is
// empty: AllEngines, or an EngineLister's own.
func DefaultEngines(s Scenario) []string {
	if l, ok := s.(EngineLister); ok {
		return l.Engines()
	}
	return AllEngines
}

// CheckEngines reports the first of names that scenario s does not run, or
// that names lists twice.
func CheckEngines(s Scenario, names []string) error {
	have := DefaultEngines(s)
	for i, name := range names {
		switch {
		case slices.Contains(names[:i], name):
			// The report's ratios read one run per engine.
			return fmt.Errorf("engine %s is listed twice", name)
		case slices.Contains(have, name):
		case name == EngineSync:
			return fmt.Errorf("engine %s is the campaign scenario's alone (its sync payout mode); %s has %s",
				name, s.Name(), strings.Join(have, ", "))
		default:
			return fmt.Errorf("unknown engine %q (%s has %s)", name, s.Name(), strings.Join(have, ", "))
		}
	}
	return nil
}

// Outcomes of a request beside the API codes (package errs).
const (
	// CodeOK is a success, repeats too, as the API answers them.
	CodeOK = "OK"
	// CodeError is a request that got no API answer at all (a transport error).
	CodeError = "ERROR"
)

// Grabber is one engine under test. Grab answers with the API code; err is
// set only when there was no API answer, or an internal one.
type Grabber interface {
	Name() string
	Grab(ctx context.Context, op Op) (code string, err error)
}

// Raw runs the probe script (lua/probe.lua) through Script.Run: a check, a
// pop, a record and an event, with no business rules. What Redis itself can
// do on this machine; the other engines read as ratios of it.
type Raw struct {
	Redis redis.Scripter
	Keys  lua.Keys
}

// Name implements Grabber.
func (Raw) Name() string { return EngineRaw }

// Grab implements Grabber.
func (r Raw) Grab(ctx context.Context, op Op) (string, error) {
	ok, err := lua.Probe(ctx, r.Redis, r.Keys.Probe(op.Target), op.User, time.Now().UnixMilli())
	switch {
	case err != nil:
		return errs.CodeInternal, err
	case ok:
		return CodeOK, nil
	}
	return errs.CodeSoldOut, nil
}

// Engine grabs through the engine in-process, on real Redis.
type Engine struct{ E *packet.Service }

// Name implements Grabber.
func (Engine) Name() string { return EngineEngine }

// Grab implements Grabber.
func (e Engine) Grab(ctx context.Context, op Op) (string, error) {
	_, err := e.E.Grab(ctx, op.Target, op.User)
	return engineAnswer(err)
}

// engineAnswer is the API code of an engine call's error, as the HTTP layer
// answers it (engine.ErrorCode), CodeOK for none; the error only with
// INTERNAL.
func engineAnswer(err error) (string, error) {
	if err == nil {
		return CodeOK, nil
	}
	if code := engine.ErrorCode(err); code != errs.CodeInternal {
		return code, nil
	}
	return errs.CodeInternal, err
}

// HTTP grabs through grabd's API with a plain HTTP client. The server must
// accept X-User-Id (GRAB_AUTH=dev, or the embedded mode).
type HTTP struct {
	URL    string // e.g. http://127.0.0.1:8080
	Client *http.Client
}

// Name implements Grabber.
func (HTTP) Name() string { return EngineHTTP }

// Grab implements Grabber.
func (h HTTP) Grab(ctx context.Context, op Op) (string, error) {
	return h.grab(ctx, h.grabPath(op), op.User)
}

// grabPath implements wrkGrabber: POST /v1/packets/{id}/grab.
func (HTTP) grabPath(op Op) string {
	return "/v1/packets/" + strconv.FormatInt(op.Target, 10) + "/grab"
}

// baseURL implements wrkGrabber.
func (h HTTP) baseURL() string { return h.URL }

// grab posts a bodiless grab to path as user and answers with its API code.
// It builds no header map and decodes no 2xx body: the load generator's
// own cost per request is part of what the http engine measures.
func (h HTTP) grab(ctx context.Context, path string, user int64) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL+path, nil)
	if err != nil {
		return CodeError, err
	}
	req.Header["X-User-Id"] = []string{strconv.FormatInt(user, 10)}
	var code string
	err = h.send(req, nil, &code)
	return answer(code, err)
}

// answer is what a request with grab-like answers returns: its API code,
// CodeError when the server never answered, and the error only then or
// with an INTERNAL answer.
func answer(code string, err error) (string, error) {
	switch code {
	case "":
		return CodeError, err
	case errs.CodeInternal:
		return code, err
	}
	return code, nil
}

// do sends a request and decodes a 2xx answer into out; code is the API
// code (OK on 2xx) whenever the server answered.
func (h HTTP) do(ctx context.Context, method, path string, headers map[string]string, body, out any, code *string) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, h.URL+path, rd)
	if err != nil {
		return err
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	return h.send(req, out, code)
}

// send sends req and decodes a 2xx answer into out; code is the API code
// (OK on 2xx) whenever the server answered.
func (h HTTP) send(req *http.Request, out any, code *string) error {
	method, path := req.Method, req.URL.Path
	resp, err := h.Client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 == 2 && out == nil {
		// Read to the end, so the connection is reused, keeping nothing.
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			return err
		}
		if code != nil {
			*code = CodeOK
		}
		return nil
	}
	raw, err := io.ReadAll(resp.Body) // read to the end: the connection is reused
	if err != nil {
		return err
	}
	if resp.StatusCode/100 == 2 {
		if code != nil {
			*code = CodeOK
		}
		return json.Unmarshal(raw, out)
	}
	var e struct {
		Error struct{ Code, Message string }
	}
	if json.Unmarshal(raw, &e) != nil || e.Error.Code == "" {
		return fmt.Errorf("%s %s: HTTP %d", method, path, resp.StatusCode)
	}
	if code != nil {
		*code = e.Error.Code
	}
	return fmt.Errorf("%s %s: %s: %s", method, path, e.Error.Code, e.Error.Message)
}

// HTTPSetup sets up through grabd's admin and user API (for -url).
type HTTPSetup struct {
	HTTP
	AdminToken string
}

func (s HTTPSetup) admin() map[string]string {
	return map[string]string{"Authorization": "Bearer " + s.AdminToken}
}

// Deposit implements Setup.
func (s HTTPSetup) Deposit(ctx context.Context, userID, fen int64, ref string) error {
	return s.do(ctx, http.MethodPost, fmt.Sprintf("/v1/admin/accounts/%d/deposit", userID), s.admin(),
		map[string]any{"amount": money.Format(fen), "ref": ref}, nil, nil)
}

// SetGroupMembers implements Setup.
func (s HTTPSetup) SetGroupMembers(ctx context.Context, groupID int64, users []int64) error {
	return s.do(ctx, http.MethodPut, fmt.Sprintf("/v1/admin/groups/%d/members", groupID), s.admin(),
		map[string]any{"user_ids": users}, nil, nil)
}

// SendAndPay implements Setup.
func (s HTTPSetup) SendAndPay(ctx context.Context, senderID, groupID int64, count int, fen int64) (int64, error) {
	user := map[string]string{"X-User-Id": strconv.FormatInt(senderID, 10)}
	var p struct {
		ID int64 `json:"packet_id"`
	}
	err := s.do(ctx, http.MethodPost, "/v1/packets", user,
		map[string]any{"kind": packet.KindGroupLucky, "group_id": groupID, "count": count, "amount": money.Format(fen)}, &p, nil)
	if err != nil {
		return 0, err
	}
	return p.ID, s.do(ctx, http.MethodPost, fmt.Sprintf("/v1/packets/%d/pay", p.ID), user,
		map[string]any{"method": "balance"}, nil, nil)
}

// MySQLLock is the naive scheme, the baseline the engine replaces:
// one MySQL transaction per grab that locks the packet row (SELECT … FOR
// UPDATE), picks the first unowned share, gives it to the user, credits the
// balance through the ledger and commits. Every grab of a packet queues on
// that row lock. It writes the same rows the engine's writer does, so the
// same audit applies.
type MySQLLock struct{ DB *sqlx.DB }

// Name implements Grabber.
func (MySQLLock) Name() string { return EngineMySQLLock }

// Grab implements Grabber.
func (m MySQLLock) Grab(ctx context.Context, op Op) (string, error) {
	return retryLockRace(func() (string, error) { return m.try(ctx, op) })
}

// retryLockRace runs a naive scheme's transaction again when it lost a lock
// race (a deadlock, or a lock wait timeout), as a careful implementation
// would, up to five times.
func retryLockRace(try func() (string, error)) (string, error) {
	for attempt := 0; ; attempt++ {
		code, err := try()
		var me *mysql.MySQLError
		if err != nil && errors.As(err, &me) && (me.Number == 1213 || me.Number == 1205) && attempt < 5 {
			continue
		}
		return code, err
	}
}

func (m MySQLLock) try(ctx context.Context, op Op) (string, error) {
	tx, err := m.DB.BeginTxx(ctx, nil)
	if err != nil {
		return errs.CodeInternal, err
	}
	defer tx.Rollback()
	var p struct {
		Status  string        `db:"status"`
		GroupID sql.NullInt64 `db:"group_id"`
	}
	err = tx.GetContext(ctx, &p, "SELECT status, group_id FROM packet WHERE id = ? FOR UPDATE", op.Target)
	if errors.Is(err, sql.ErrNoRows) {
		return errs.CodeNotFound, nil
	}
	if err != nil {
		return errs.CodeInternal, err
	}
	var member int
	if err := tx.GetContext(ctx, &member, "SELECT COUNT(*) FROM group_member WHERE group_id = ? AND user_id = ?",
		p.GroupID.Int64, op.User); err != nil {
		return errs.CodeInternal, err
	}
	if member == 0 {
		return errs.CodeForbidden, nil
	}
	var shares []struct {
		Seq    int           `db:"seq"`
		Amount store.Fen     `db:"amount"`
		UserID sql.NullInt64 `db:"user_id"`
	}
	if err := tx.SelectContext(ctx, &shares, "SELECT seq, amount, user_id FROM packet_share WHERE packet_id = ? ORDER BY seq", op.Target); err != nil {
		return errs.CodeInternal, err
	}
	pick, unowned := -1, 0
	for i, s := range shares {
		if s.UserID.Valid && s.UserID.Int64 == op.User {
			return CodeOK, tx.Commit() // a repeat: the share the user holds
		}
		if !s.UserID.Valid {
			if pick < 0 {
				pick = i
			}
			unowned++
		}
	}
	switch {
	case p.Status == packet.StatusFinished || pick < 0:
		return errs.CodeSoldOut, nil
	case p.Status != packet.StatusOpen:
		return errs.CodeNotOpen, nil
	}
	s, now := shares[pick], time.Now().UTC()
	if _, err := tx.ExecContext(ctx, "UPDATE packet_share SET user_id = ?, grabbed_at = ?, credited = 1 WHERE packet_id = ? AND seq = ?",
		op.User, now, op.Target, s.Seq); err != nil {
		return errs.CodeInternal, err
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO ledger (kind, ref, user_id, amount, created_at) VALUES (?, ?, ?, ?, ?)",
		store.KindGrab, fmt.Sprintf("pk:%d:%d", op.Target, s.Seq), op.User, money.Format(int64(s.Amount)), now); err != nil {
		return errs.CodeInternal, err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO account (user_id, balance, updated_at) VALUES (?, ?, ?)
		ON DUPLICATE KEY UPDATE balance = balance + VALUES(balance), updated_at = VALUES(updated_at)`,
		op.User, money.Format(int64(s.Amount)), now); err != nil {
		return errs.CodeInternal, err
	}
	if unowned == 1 {
		if _, err := tx.ExecContext(ctx, "UPDATE packet SET status = 'finished', finished_at = ? WHERE id = ?", now, op.Target); err != nil {
			return errs.CodeInternal, err
		}
	}
	if err := tx.Commit(); err != nil {
		return errs.CodeInternal, err
	}
	return CodeOK, nil
}
