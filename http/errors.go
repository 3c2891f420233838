package http

import (
	"context"
	"errors"
	"fmt"
	nethttp "net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/grab-engine/grab/engine/campaign"

	"github.com/gin-gonic/gin"

	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/engine/stock"
)

// API error codes (docs/api.md). The first block is the original contract's;
// the second adds codes it leaves open (documented in openapi.json).
const (
	CodeInvalidArgument     = "INVALID_ARGUMENT"
	CodeUnauthenticated     = "UNAUTHENTICATED"
	CodeForbidden           = "FORBIDDEN"
	CodeNotFound            = "NOT_FOUND"
	CodeInsufficientBalance = "INSUFFICIENT_BALANCE"
	CodeNotPayable          = "NOT_PAYABLE"
	CodeNotOpen             = "NOT_OPEN"
	CodeSoldOut             = "SOLD_OUT"
	CodeExpired             = "EXPIRED"
	CodeBusy                = "BUSY"
	CodeInternal            = "INTERNAL"

	CodeIdempotencyConflict = "IDEMPOTENCY_CONFLICT"
	CodePayloadTooLarge     = "PAYLOAD_TOO_LARGE"
	CodeMethodNotAllowed    = "METHOD_NOT_ALLOWED"
	CodeAmountMismatch      = "AMOUNT_MISMATCH"

	// Stock (docs/api.md "Stock (activity SKUs)"), and two codes added to it.
	CodeOutOfStock       = "OUT_OF_STOCK"
	CodeAlreadySubmitted = "ALREADY_SUBMITTED"
	CodeNotForSale       = "NOT_FOR_SALE"
	CodeOrderClosed      = "ORDER_CLOSED"
	CodeTCCRefused       = "TCC_REFUSED"
	CodeRolledBack       = "ROLLED_BACK"

	// Campaign payouts: status 3 (already received) and 7 (transferring)
	// each have their own code, so the app can say the right thing
	// (docs/glossary.md).
	CodeAwardReceived    = "AWARD_RECEIVED"
	CodePayoutInProgress = "PAYOUT_IN_PROGRESS"
)

// apiError is an error with its API code and HTTP status.
type apiError struct {
	Status  int
	Code    string
	Message string
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

func newError(status int, code, format string, args ...any) *apiError {
	return &apiError{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

func invalid(format string, args ...any) *apiError {
	return newError(nethttp.StatusBadRequest, CodeInvalidArgument, format, args...)
}

// errorTable maps every engine sentinel to its API code and status. It is the
// only place where that mapping lives.
var errorTable = []struct {
	err    error
	status int
	code   string
}{
	{engine.ErrInvalidArgument, nethttp.StatusBadRequest, CodeInvalidArgument},
	{engine.ErrForbidden, nethttp.StatusForbidden, CodeForbidden},
	{engine.ErrNotFound, nethttp.StatusNotFound, CodeNotFound},
	{engine.ErrInsufficientBalance, nethttp.StatusConflict, CodeInsufficientBalance},
	{engine.ErrNotPayable, nethttp.StatusConflict, CodeNotPayable},
	{engine.ErrNotOpen, nethttp.StatusConflict, CodeNotOpen},
	{engine.ErrSoldOut, nethttp.StatusConflict, CodeSoldOut},
	{engine.ErrExpired, nethttp.StatusGone, CodeExpired},
	{engine.ErrBusy, nethttp.StatusServiceUnavailable, CodeBusy},
	{engine.ErrIdempotencyConflict, nethttp.StatusConflict, CodeIdempotencyConflict},
	{engine.ErrAmountMismatch, nethttp.StatusConflict, CodeAmountMismatch},
	{stock.ErrOutOfStock, nethttp.StatusConflict, CodeOutOfStock},
	{stock.ErrAlreadySubmitted, nethttp.StatusConflict, CodeAlreadySubmitted},
	{stock.ErrNotForSale, nethttp.StatusConflict, CodeNotForSale},
	{stock.ErrOrderClosed, nethttp.StatusConflict, CodeOrderClosed},
	{stock.ErrTCCRefused, nethttp.StatusConflict, CodeTCCRefused},
	{stock.ErrRolledBack, nethttp.StatusConflict, CodeRolledBack},
	{engine.ErrAwardReceived, nethttp.StatusConflict, CodeAwardReceived},
	{engine.ErrPayoutInProgress, nethttp.StatusConflict, CodePayoutInProgress},
}

// toAPIError classifies err. The boolean is false for errors that are not
// part of the contract: they become INTERNAL and must be logged.
func toAPIError(err error) (*apiError, bool) {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae, true
	}
	for _, row := range errorTable {
		if errors.Is(err, row.err) {
			// Engine errors are written for people: keep the detail, drop the package prefix.
			return &apiError{Status: row.status, Code: row.code, Message: strings.TrimPrefix(err.Error(), "engine: ")}, true
		}
	}
	if engine.Unavailable(err) {
		// Redis or the store cannot serve now (down, restarting, loading,
		// failing over, out of connections): the client retries, as for
		// load shed. Never INTERNAL; the message names no dependency.
		return &apiError{Status: nethttp.StatusServiceUnavailable, Code: CodeBusy, Message: msgUnavailable}, true
	}
	return &apiError{Status: nethttp.StatusInternalServerError, Code: CodeInternal, Message: "internal error"}, false
}

// msgUnavailable is BUSY's message when a dependency, not the writer's lag,
// is the cause.
const msgUnavailable = "busy: the service cannot take this request right now; retry later"

// unavailableLogged is when an unavailable dependency was last logged (Unix
// ms): once a second is enough to see an outage, and every request of one
// would drown the log.
var unavailableLogged atomic.Int64

// logUnavailable logs err at most once a second.
func (s *server) logUnavailable(c *gin.Context, err error) {
	now := time.Now().UnixMilli()
	last := unavailableLogged.Load()
	if now-last < 1000 || !unavailableLogged.CompareAndSwap(last, now) {
		return
	}
	s.log.WarnContext(c.Request.Context(), "dependency unavailable; answering BUSY", "method", c.Request.Method,
		"route", routeOf(c), "err", err)
}

type errorBody struct {
	Error errorDetail `json:"error"`
	// Award is the award a PAYOUT_IN_PROGRESS is about: won, not yet paid.
	Award *awardResponse `json:"award,omitempty"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// fail answers with the API error for err and stops the handler chain.
func (s *server) fail(c *gin.Context, err error) {
	ae, known := toAPIError(err)
	if !known {
		level := s.log.ErrorContext
		if errors.Is(err, context.Canceled) && c.Request.Context().Err() != nil {
			level = s.log.InfoContext // the client went away; nothing is wrong here
		}
		level(c.Request.Context(), "request failed", "method", c.Request.Method, "route", routeOf(c), "err", err)
	}
	if ae.Code == CodeBusy {
		c.Header("Retry-After", "1")
		if !errors.Is(err, engine.ErrBusy) {
			s.logUnavailable(c, err)
		}
	}
	c.Set(ctxErrorCode, ae.Code)
	body := errorBody{Error: errorDetail{Code: ae.Code, Message: ae.Message}}
	var pending *campaign.PayoutPendingError
	if errors.As(err, &pending) {
		a := awardView(pending.Award)
		body.Award = &a
	}
	c.AbortWithStatusJSON(ae.Status, body)
}
