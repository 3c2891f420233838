package http

import (
	"strconv"
	"sync"

	"github.com/gin-gonic/gin"

	"github.com/prometheus/client_golang/prometheus"
)

// jsonContentType is what gin's c.JSON answers with; the hand-written
// answers keep it.
const jsonContentType = "application/json; charset=utf-8"

// jsonContentTypeHeader is the header value, shared by every answer that
// sets it (net/http only reads it), so none allocates its own.
var jsonContentTypeHeader = []string{jsonContentType}

// writeJSON answers status with body, an encoded JSON value, as c.JSON
// would have (same header, same bytes) without its allocations.
func writeJSON(c *gin.Context, status int, body []byte) {
	c.Writer.Header()["Content-Type"] = jsonContentTypeHeader
	c.Writer.WriteHeader(status)
	_, _ = c.Writer.Write(body) // a failed write is the client gone; nothing to answer
}

// appendGrabJSON appends r as encoding/json writes a grabResponse, byte for
// byte, without reflection: the grab is the hottest answer of the API.
func appendGrabJSON(b []byte, r grabResponse) []byte {
	b = append(b, `{"packet_id":`...)
	b = strconv.AppendInt(b, r.PacketID, 10)
	b = append(b, `,"amount":"`...)
	b = appendMoney(b, int64(r.Amount))
	b = append(b, `","seq":`...)
	b = strconv.AppendInt(b, int64(r.Seq), 10)
	b = append(b, `,"repeat":`...)
	b = strconv.AppendBool(b, r.Repeat)
	b = append(b, `,"credited":`...)
	b = strconv.AppendBool(b, r.Credited)
	return append(b, '}')
}

// appendMoney appends fen as money.Format writes it: yuan, a point and two
// digits of fen ("-0.05", "12.34").
func appendMoney(b []byte, fen int64) []byte {
	u := uint64(fen)
	if fen < 0 {
		b = append(b, '-')
		u = -u
	}
	b = strconv.AppendUint(b, u/100, 10)
	cents := u % 100
	return append(b, '.', byte('0'+cents/10), byte('0'+cents%10))
}

// requestKey is one child of grab_http_requests_total.
type requestKey struct {
	route, method string
	status        int
}

// counterCache resolves the children of a counter vector once per label
// set, so a request neither formats nor hashes its labels again. Label
// sets are bounded: route templates, methods, statuses and error codes.
type counterCache[K comparable] struct {
	m      sync.Map // K → prometheus.Counter
	labels func(K) []string
	vec    *prometheus.CounterVec
}

func newCounterCache[K comparable](vec *prometheus.CounterVec, labels func(K) []string) *counterCache[K] {
	return &counterCache[K]{vec: vec, labels: labels}
}

// inc adds one to k's child.
func (cc *counterCache[K]) inc(k K) {
	if c, ok := cc.m.Load(k); ok {
		c.(prometheus.Counter).Inc()
		return
	}
	c, _ := cc.m.LoadOrStore(k, cc.vec.WithLabelValues(cc.labels(k)...))
	c.(prometheus.Counter).Inc()
}

func requestLabels(k requestKey) []string {
	return []string{k.route, k.method, strconv.Itoa(k.status)}
}

func codeLabels(code string) []string { return []string{code} }
