package http

import (
	"errors"
	nethttp "net/http"
	"net/url"
	"time"

	"github.com/grab-engine/grab/engine/channel"

	"github.com/grab-engine/grab/engine/alipay"
	"github.com/grab-engine/grab/engine/errs"
	"github.com/grab-engine/grab/engine/wechatpay"
)

// A Notifier reads a native channel's own notifications at
// POST /v1/payments/notify/{channel} and answers them the channel's way;
// a channel without one takes docs/api.md's JSON signed with GRAB_PAY_SECRET.
type Notifier interface {
	// Notification verifies a request (headers and raw body) and reads it.
	// apply is false, with a nil error, for a genuine notification with
	// nothing to apply (a trade still waiting for its payer): it is
	// acknowledged. A refusal is an *apiError-classifiable error: a bad
	// signature, a stale timestamp or another merchant's or app's id is
	// UNAUTHENTICATED (401); a malformed body INVALID_ARGUMENT (400).
	Notification(h nethttp.Header, body []byte) (n channel.Notification, apply bool, err error)
	// Ack acknowledges a notification; the channel stops resending it.
	Ack(w nethttp.ResponseWriter)
	// Refuse answers a refusal with status; the channel resends later.
	Refuse(w nethttp.ResponseWriter, status int, code, message string)
}

// AlipayNotifier reads Alipay's asynchronous notifications: the POSTed form,
// RSA2-signed by Alipay over the sorted parameters (alipay.VerifyNotification),
// acknowledged with the plain text "success" (alipay.Ack); a refusal is any
// other body, "fail: CODE: message".
func AlipayNotifier(c *alipay.Client) Notifier { return alipayNotifier{c} }

type alipayNotifier struct{ c *alipay.Client }

func (a alipayNotifier) Notification(_ nethttp.Header, body []byte) (channel.Notification, bool, error) {
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return channel.Notification{}, false, invalid("alipay notification: the body is not a form: %v", err)
	}
	n, err := a.c.VerifyNotification(form)
	switch {
	case errors.Is(err, alipay.ErrNotFinal):
		return n, false, nil
	case errors.Is(err, alipay.ErrBadSignature), errors.Is(err, alipay.ErrWrongApp):
		return n, false, errs.Errorf(errs.CodeUnauthenticated, "%v", err)
	case err != nil:
		return n, false, invalid("%v", err)
	}
	return n, true, nil
}

func (alipayNotifier) Ack(w nethttp.ResponseWriter) { writeText(w, nethttp.StatusOK, alipay.Ack) }

func (alipayNotifier) Refuse(w nethttp.ResponseWriter, status int, code, message string) {
	writeText(w, status, "fail: "+code+": "+message)
}

func writeText(w nethttp.ResponseWriter, status int, text string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(text))
}

// WechatNotifier reads WeChat Pay API v3 notifications: the JSON envelope
// signed in the Wechatpay-* headers, within wechatpay.MaxClockSkew of now,
// its resource decrypted with the APIv3 key (wechatpay.VerifyNotification);
// acknowledged 204, refused with {"code":"FAIL","message":…}. now nil means
// time.Now.
func WechatNotifier(c *wechatpay.Client, now func() time.Time) Notifier {
	if now == nil {
		now = time.Now
	}
	return wechatNotifier{c, now}
}

type wechatNotifier struct {
	c   *wechatpay.Client
	now func() time.Time
}

func (wn wechatNotifier) Notification(h nethttp.Header, body []byte) (channel.Notification, bool, error) {
	n, err := wn.c.VerifyNotification(h, body, wn.now())
	switch {
	case errors.Is(err, wechatpay.ErrMalformed):
		return n, false, invalid("%v", err)
	case err != nil:
		// A signature, serial, timestamp, APIv3 key or merchant that is not ours.
		return n, false, errs.Errorf(errs.CodeUnauthenticated, "%v", err)
	}
	return n, true, nil
}

func (wechatNotifier) Ack(w nethttp.ResponseWriter) { wechatpay.WriteNotifyOK(w) }

func (wechatNotifier) Refuse(w nethttp.ResponseWriter, status int, code, message string) {
	wechatpay.WriteNotifyFail(w, status, code+": "+message)
}
