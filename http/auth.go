package http

import (
	"crypto/subtle"
	"errors"
	nethttp "net/http"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"
	"github.com/golang-jwt/jwt/v5"
	"github.com/grab-engine/grab/engine/errs"
)

// Keys of values stored on the gin context.
const (
	ctxUserID    = "grab.user_id"
	ctxErrorCode = "grab.error_code"
)

var errUnauthenticated = errs.Errorf(errs.CodeUnauthenticated, "missing or invalid credentials")

// authUser admits a request that carries a valid user JWT, or, in dev
// mode, an X-User-Id header; it stores the user id on the context.
func (s *server) authUser(c *gin.Context) {
	uid, err := s.userFromRequest(c.Request)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.Set(ctxUserID, uid)
	c.Next()
}

// authAdmin admits a request that carries the admin token. A request that
// proves a user identity instead is FORBIDDEN (authenticated, not allowed);
// anything else is UNAUTHENTICATED.
func (s *server) authAdmin(c *gin.Context) {
	token, ok := bearer(c.Request)
	// An empty configured token would match an empty bearer: admin is then closed.
	if ok && s.cfg.AdminToken != "" && subtle.ConstantTimeCompare([]byte(token), []byte(s.cfg.AdminToken)) == 1 {
		c.Next()
		return
	}
	if uid, err := s.userFromRequest(c.Request); err == nil {
		c.Set(ctxUserID, uid)
		s.fail(c, errs.Errorf(errs.CodeForbidden, "not admin"))
		return
	}
	s.fail(c, errUnauthenticated)
}

func (s *server) userFromRequest(r *nethttp.Request) (int64, error) {
	if r.Header.Get("Authorization") != "" {
		token, ok := bearer(r)
		if !ok {
			return 0, errUnauthenticated
		}
		return s.parseJWT(token)
	}
	if s.cfg.DevAuth {
		if v := r.Header.Get("X-User-Id"); v != "" {
			uid, err := positiveID(v)
			if err != nil {
				return 0, errs.Errorf(errs.CodeUnauthenticated, "X-User-Id must be a positive integer")
			}
			return uid, nil
		}
	}
	return 0, errUnauthenticated
}

// parseJWT checks an HS256 token with an exp claim and returns its subject as a user id.
func (s *server) parseJWT(token string) (int64, error) {
	if len(s.cfg.JWTSecret) == 0 {
		return 0, errUnauthenticated // no secret configured: no JWT can be valid
	}
	var claims jwt.RegisteredClaims
	_, err := jwt.ParseWithClaims(token, &claims, func(*jwt.Token) (any, error) { return s.cfg.JWTSecret, nil },
		jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired())
	if err != nil {
		if errors.Is(err, jwt.ErrTokenExpired) {
			return 0, errs.Errorf(errs.CodeUnauthenticated, "token expired")
		}
		return 0, errUnauthenticated
	}
	uid, err := positiveID(claims.Subject)
	if err != nil {
		return 0, errs.Errorf(errs.CodeUnauthenticated, "token subject must be a positive user id")
	}
	return uid, nil
}

func bearer(r *nethttp.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// positiveID parses a decimal user id: digits only, greater than zero.
func positiveID(s string) (int64, error) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, strconv.ErrSyntax
	}
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, strconv.ErrSyntax
	}
	return id, nil
}

func userID(c *gin.Context) int64 { return c.GetInt64(ctxUserID) }
