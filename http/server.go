// Package http serves grab's HTTP API (docs/api.md) over the engine: routing,
// authentication, input validation, the error-code table, and metrics.
package http

import (
	"context"
	_ "embed"
	"fmt"
	"log/slog"
	nethttp "net/http"
	"runtime/debug"
	"time"

	"github.com/grab-engine/grab/engine/campaign"
	"github.com/grab-engine/grab/engine/packet"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/grab-engine/grab"
	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/engine/errs"
	"github.com/grab-engine/grab/engine/stock"
)

// Config configures the API.
type Config struct {
	// JWTSecret verifies user tokens (HS256). Empty: no JWT is accepted.
	JWTSecret []byte
	// AdminToken is the bearer token of /v1/admin/... Empty: admin is closed.
	AdminToken string
	// DevAuth accepts X-User-Id in place of a JWT. Embedded mode and GRAB_AUTH=dev only.
	DevAuth bool
	// PaySecret verifies payment provider notifications (HMAC-SHA256). Empty:
	// every notification is refused.
	PaySecret []byte
	// Notifiers read native channels' own notification formats, by channel
	// (channel.Alipay: AlipayNotifier, channel.Wechat:
	// WechatNotifier); other channels take the JSON signed with PaySecret.
	Notifiers map[string]Notifier
	// Ready are more checks of /readyz, after the engine's (e.g. the event
	// relay's); the first error answers 503 with it as the reason.
	Ready []func(context.Context) error
}

//go:embed openapi.json
var openAPI []byte

type server struct {
	eng       *engine.Engine
	packets   *packet.Service
	campaigns *campaign.Service
	stock     *stock.Service
	cfg       Config
	log       *slog.Logger
	m         *metrics
}

// New returns the API handler over g's domains. Metrics are registered on
// reg and /metrics serves what reg gathers; a nil reg gets a registry of its own.
func New(g *grab.Grab, cfg Config, log *slog.Logger, reg *prometheus.Registry) nethttp.Handler {
	if log == nil {
		log = slog.Default()
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	s := &server{cfg: cfg, log: log, m: newMetrics(reg)}
	if g != nil {
		s.eng, s.packets, s.campaigns, s.stock = g.Engine, g.Packets, g.Campaigns, g.Stock
	}

	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	// A path with a trailing slash or odd case is not a route: answer 404, not a redirect.
	r.RedirectTrailingSlash = false
	r.RedirectFixedPath = false
	r.HandleMethodNotAllowed = true
	r.Use(s.accessLog, s.recovery)
	r.NoRoute(func(c *gin.Context) { s.fail(c, errs.Errorf(errs.CodeNotFound, "no such endpoint")) })
	r.NoMethod(func(c *gin.Context) {
		s.fail(c, errs.Errorf(errs.CodeMethodNotAllowed, "method %s is not allowed here", c.Request.Method))
	})

	admin := r.Group("/v1/admin", s.authAdmin)
	admin.POST("/accounts/:user_id/deposit", s.deposit)
	admin.PUT("/groups/:group_id/members", s.setMembers)
	admin.POST("/activities/:a/products/:p/skus", s.submitSKUs)
	admin.GET("/activities/:a/products/:p/skus/:sku", s.getSKU)
	admin.PATCH("/activities/:a/products/:p/skus/:sku", s.editSKU)
	admin.DELETE("/activities/:a/products/:p/skus/:sku", s.revokeSKU)
	admin.POST("/activities/:a/products/:p/skus/:sku/exit", s.exitSKU)
	admin.POST("/pools/:pool/salvage", s.salvage)
	admin.POST("/pools/:pool/release", s.release)
	admin.POST("/vouchers/:voucher/rollback", s.rollbackVoucher)
	admin.POST("/campaigns", s.createCampaign)
	admin.GET("/campaigns/:id", s.getCampaign)
	admin.POST("/campaigns/:id/awards/:seq/retry", s.retryPayout)
	admin.GET("/debug/pprof/:name", s.profile)

	// Service endpoints of other back-end services (orders, dtm): the admin token.
	svc := r.Group("/v1/stock", s.authAdmin)
	svc.POST("/deduct", s.deductStock)
	svc.POST("/return", s.returnStock)
	svc.POST("/tcc/try", s.tccTry)
	svc.POST("/tcc/confirm", s.tccConfirm)
	svc.POST("/tcc/cancel", s.tccCancel)

	user := r.Group("/v1", s.authUser)
	user.GET("/balance", s.balance)
	user.POST("/packets", s.createPacket)
	user.POST("/packets/:id/pay", s.payPacket)
	user.POST("/packets/:id/grab", s.grab)
	user.GET("/packets/:id", s.getPacket)
	user.POST("/payments/:trade_no/return", s.paymentReturn)
	user.GET("/payments/:trade_no", s.payment)
	user.POST("/campaigns/:id/grab", s.grabCampaign)
	user.GET("/campaigns/:id/awards", s.myAwards)
	user.POST("/campaigns/:id/awards/:seq/receive", s.receiveAward)
	// The provider's server calls this; the signature is its credential.
	r.POST("/v1/payments/notify/:channel", s.notify)

	healthz := func(c *gin.Context) { c.JSON(nethttp.StatusOK, gin.H{"status": "ok"}) }
	r.GET("/healthz", healthz)
	r.GET("/readyz", s.ready)
	// Load balancers often probe with HEAD: the same answer, net/http drops the body.
	r.HEAD("/healthz", healthz)
	r.HEAD("/readyz", s.ready)
	metricsHandler := promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
	r.GET("/metrics", gin.WrapH(metricsHandler))
	r.GET("/openapi.json", func(c *gin.Context) { c.Data(nethttp.StatusOK, "application/json", openAPI) })
	return r
}

func (s *server) ready(c *gin.Context) {
	ctx, cancel := context.WithTimeout(c.Request.Context(), 2*time.Second)
	defer cancel()
	if err := s.readyErr(ctx); err != nil {
		// Down, loading or failing over: a probe, or a client, asks again.
		c.Header("Retry-After", "1")
		c.JSON(nethttp.StatusServiceUnavailable, gin.H{"status": "not ready", "reason": err.Error()})
		return
	}
	c.JSON(nethttp.StatusOK, gin.H{"status": "ready", "writer_lag_seconds": s.eng.WriterLag().Seconds()})
}

// readyErr is the first failing readiness check: the engine's, then Config.Ready's.
func (s *server) readyErr(ctx context.Context) error {
	if err := s.eng.Ready(ctx); err != nil {
		return err
	}
	for _, ready := range s.cfg.Ready {
		if err := ready(ctx); err != nil {
			return err
		}
	}
	return nil
}

type metrics struct {
	requests      *prometheus.CounterVec
	grabs         *prometheus.CounterVec
	grabLatency   prometheus.Histogram
	campaignGrabs *prometheus.CounterVec

	// Resolved children of requests and grabs, by label set.
	requestCount *counterCache[requestKey]
	grabCount    *counterCache[string]
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grab_http_requests_total", Help: "HTTP requests by route template, method and status."},
			[]string{"route", "method", "status"}),
		grabs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grab_grabs_total", Help: "Grab requests by outcome: OK or the API error code."},
			[]string{"code"}),
		grabLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "grab_grab_latency_seconds", Help: "Time the grab handler took, authentication excluded.",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 15)}),
		campaignGrabs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grab_campaign_grabs_total", Help: "Campaign grab requests by outcome: OK or the API error code."},
			[]string{"code"}),
	}
	reg.MustRegister(m.requests, m.grabs, m.grabLatency, m.campaignGrabs)
	m.requestCount = newCounterCache(m.requests, requestLabels)
	m.grabCount = newCounterCache(m.grabs, codeLabels)
	return m
}

// routeOf is the route template, so logs and metrics never carry raw ids.
func routeOf(c *gin.Context) string {
	if p := c.FullPath(); p != "" {
		return p
	}
	return "unmatched"
}

// accessLog writes one structured line per request and counts it.
func (s *server) accessLog(c *gin.Context) {
	start := time.Now()
	c.Next()
	route, status := routeOf(c), c.Writer.Status()
	s.m.requestCount.inc(requestKey{route: route, method: methodLabel(c.Request.Method), status: status})
	level := slog.LevelInfo
	switch route {
	case "/healthz", "/readyz", "/metrics":
		level = slog.LevelDebug // probes and scrapes would drown the log
	}
	ctx := c.Request.Context()
	if !s.log.Enabled(ctx, level) {
		return
	}
	var buf [6]slog.Attr
	attrs := append(buf[:0],
		slog.String("method", c.Request.Method),
		slog.String("route", route),
		slog.Int("status", status),
		slog.Float64("duration_ms", float64(time.Since(start).Microseconds())/1000),
	)
	if uid := userID(c); uid != 0 {
		attrs = append(attrs, slog.Int64("user_id", uid))
	}
	if code := c.GetString(ctxErrorCode); code != "" {
		attrs = append(attrs, slog.String("code", code))
	}
	s.log.LogAttrs(ctx, level, "http request", attrs...)
}

// methodLabel is method as a metric label: a client may send any token as
// its method, and each label value is a series kept for good, so those the
// API does not know count as OTHER.
func methodLabel(method string) string {
	switch method {
	case nethttp.MethodGet, nethttp.MethodPost, nethttp.MethodPut, nethttp.MethodDelete, nethttp.MethodPatch,
		nethttp.MethodHead, nethttp.MethodOptions:
		return method
	}
	return "OTHER"
}

// recovery turns a panic into INTERNAL; the stack goes to the log, never to the client.
func (s *server) recovery(c *gin.Context) {
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		if v == nethttp.ErrAbortHandler {
			panic(v) // the server's own signal to drop the connection
		}
		s.log.ErrorContext(c.Request.Context(), "panic in handler", "route", routeOf(c),
			"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		if c.Writer.Written() {
			c.Abort()
			return
		}
		c.Set(ctxErrorCode, errs.CodeInternal)
		c.AbortWithStatusJSON(nethttp.StatusInternalServerError,
			errorBody{Error: errorDetail{Code: errs.CodeInternal, Message: "internal error"}})
	}()
	c.Next()
}
