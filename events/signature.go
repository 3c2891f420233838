package events

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"time"
)

// Sign is the value of SignatureHeader for body sent at t:
// "t=<unix seconds>,v1=<hex HMAC-SHA256 under secret of "<unix seconds>.<body>">".
// Signing the time with the body lets a receiver refuse a replayed request.
func Sign(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + mac(secret, ts, body)
}

// mac is the hex HMAC-SHA256 under secret of "<ts>.<body>".
func mac(secret []byte, ts string, body []byte) string {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte(ts))
	h.Write([]byte{'.'})
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil))
}

// Errors of VerifySignature.
var (
	ErrSignatureMalformed = errors.New("events: signature header malformed")
	ErrSignatureMismatch  = errors.New("events: signature does not match")
	ErrSignatureStale     = errors.New("events: signature too old or from the future")
)

// VerifySignature checks header (SignatureHeader's value) against body, as a
// webhook receiver does: the v1 HMAC must match and its time be within
// tolerance of now (either way; 0: any time). A header may carry several v1
// values (a secret being rotated); one match is enough.
func VerifySignature(secret []byte, header string, body []byte, now time.Time, tolerance time.Duration) error {
	var ts string
	var sigs []string
	for part := range strings.SplitSeq(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		switch {
		case !ok:
			return ErrSignatureMalformed
		case k == "t":
			ts = v
		case k == "v1":
			sigs = append(sigs, v)
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || len(sigs) == 0 {
		return ErrSignatureMalformed
	}
	want := mac(secret, ts, body)
	match := false
	for _, s := range sigs {
		match = match || hmac.Equal([]byte(s), []byte(want))
	}
	if !match {
		return ErrSignatureMismatch
	}
	if d := now.Sub(time.Unix(sec, 0)).Abs(); tolerance > 0 && d > tolerance {
		return ErrSignatureStale
	}
	return nil
}
