package http

import (
	"context"
	"errors"
	nethttp "net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/grab-engine/grab/engine/campaign"

	"github.com/gin-gonic/gin"

	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/engine/errs"
)

// apiError is how the API answers an error: its HTTP status, code and message.
type apiError struct {
	Status  int
	Code    string
	Message string
}

// invalid is an INVALID_ARGUMENT error with a formatted message.
func invalid(format string, args ...any) *errs.Error {
	return errs.Errorf(errs.CodeInvalidArgument, format, args...)
}

// statusOf is the HTTP status of every API code (docs/api.md). It is the
// only place where that mapping lives; the codes live with their errors
// (package errs).
var statusOf = map[string]int{
	errs.CodeInvalidArgument:     nethttp.StatusBadRequest,
	errs.CodeUnauthenticated:     nethttp.StatusUnauthorized,
	errs.CodeForbidden:           nethttp.StatusForbidden,
	errs.CodeNotFound:            nethttp.StatusNotFound,
	errs.CodeMethodNotAllowed:    nethttp.StatusMethodNotAllowed,
	errs.CodeInsufficientBalance: nethttp.StatusConflict,
	errs.CodeNotPayable:          nethttp.StatusConflict,
	errs.CodeNotOpen:             nethttp.StatusConflict,
	errs.CodeSoldOut:             nethttp.StatusConflict,
	errs.CodeIdempotencyConflict: nethttp.StatusConflict,
	errs.CodeAmountMismatch:      nethttp.StatusConflict,
	errs.CodeOutOfStock:          nethttp.StatusConflict,
	errs.CodeAlreadySubmitted:    nethttp.StatusConflict,
	errs.CodeNotForSale:          nethttp.StatusConflict,
	errs.CodeOrderClosed:         nethttp.StatusConflict,
	errs.CodeTCCRefused:          nethttp.StatusConflict,
	errs.CodeRolledBack:          nethttp.StatusConflict,
	errs.CodeAwardReceived:       nethttp.StatusConflict,
	errs.CodePayoutInProgress:    nethttp.StatusConflict,
	errs.CodeExpired:             nethttp.StatusGone,
	errs.CodePayloadTooLarge:     nethttp.StatusRequestEntityTooLarge,
	errs.CodeInternal:            nethttp.StatusInternalServerError,
	errs.CodeBusy:                nethttp.StatusServiceUnavailable,
}

// toAPIError classifies err by its code (engine.ErrorCode). The boolean is
// false for errors that are not part of the contract: they become INTERNAL
// and must be logged.
func toAPIError(err error) (apiError, bool) {
	code := engine.ErrorCode(err)
	status, ok := statusOf[code]
	switch {
	case !ok || code == errs.CodeInternal:
		return apiError{Status: nethttp.StatusInternalServerError, Code: errs.CodeInternal, Message: "internal error"}, false
	case code == errs.CodeBusy && !errors.Is(err, errs.ErrBusy):
		// Redis, the store or a payment channel cannot serve now (down,
		// restarting, loading, failing over, out of connections): the
		// client retries, as for load shed. The message names no dependency.
		return apiError{Status: status, Code: code, Message: msgUnavailable}, true
	}
	// Errors are written for people: keep the detail, drop the package prefix.
	return apiError{Status: status, Code: code, Message: strings.TrimPrefix(err.Error(), "engine: ")}, true
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
	if ae.Code == errs.CodeBusy {
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
