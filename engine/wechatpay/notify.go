package wechatpay

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/grab-engine/grab/engine/channel"
)

// MaxNotifyBody bounds a notification body; real ones are a few KiB.
const MaxNotifyBody = 64 << 10

// NotifyEnvelope is a notification's outer, signed body.
type NotifyEnvelope struct {
	ID           string   `json:"id"`
	CreateTime   string   `json:"create_time"`
	EventType    string   `json:"event_type"`    // TRANSACTION.SUCCESS for payments
	ResourceType string   `json:"resource_type"` // encrypt-resource
	Summary      string   `json:"summary"`
	Resource     Resource `json:"resource"`
}

// Resource is a notification's encrypted part.
type Resource struct {
	Algorithm      string `json:"algorithm"` // AEAD_AES_256_GCM
	Ciphertext     string `json:"ciphertext"`
	AssociatedData string `json:"associated_data"`
	OriginalType   string `json:"original_type"` // transaction
	Nonce          string `json:"nonce"`
}

// Decrypt opens an AEAD_AES_256_GCM resource with the APIv3 key: the key as
// is, the nonce's bytes as the GCM nonce, associated_data as additional
// data, ciphertext base64 of the sealed text and its 16-byte tag.
func Decrypt(apiV3Key []byte, r Resource) ([]byte, error) {
	if r.Algorithm != "AEAD_AES_256_GCM" {
		return nil, fmt.Errorf("%w: algorithm %q", ErrDecrypt, r.Algorithm)
	}
	sealed, err := base64.StdEncoding.DecodeString(r.Ciphertext)
	if err != nil {
		return nil, fmt.Errorf("%w: ciphertext is not base64", ErrDecrypt)
	}
	block, err := aes.NewCipher(apiV3Key)
	if err != nil {
		return nil, fmt.Errorf("%w: the APIv3 key must be 32 bytes", ErrDecrypt)
	}
	gcm, err := cipher.NewGCMWithNonceSize(block, len(r.Nonce))
	if err != nil || len(r.Nonce) == 0 {
		return nil, fmt.Errorf("%w: nonce of %d bytes", ErrDecrypt, len(r.Nonce))
	}
	plain, err := gcm.Open(nil, []byte(r.Nonce), sealed, []byte(r.AssociatedData))
	if err != nil {
		// Wrong APIv3 key, or a ciphertext, nonce or associated_data altered.
		return nil, fmt.Errorf("%w: authentication failed (wrong APIv3 key or altered resource)", ErrDecrypt)
	}
	return plain, nil
}

// VerifyNotification checks a payment notification and reads it: the
// Wechatpay-* headers must sign body with a key the client knows, at a
// timestamp within MaxClockSkew of now; the resource must decrypt with the
// APIv3 key; the transaction must be for our mchid and appid and final.
// Only a SUCCESS is a success; CLOSED, PAYERROR and REVOKED are failures.
func (c *Client) VerifyNotification(h http.Header, body []byte, now time.Time) (channel.Notification, error) {
	if err := c.verify(h, body, now); err != nil {
		return channel.Notification{}, fmt.Errorf("wechatpay notification refused: %w", err)
	}
	var env NotifyEnvelope
	if err := json.Unmarshal(body, &env); err != nil {
		return channel.Notification{}, fmt.Errorf("wechatpay notification refused: %w: %v", ErrMalformed, err)
	}
	if env.ResourceType != "encrypt-resource" || env.Resource.OriginalType != "transaction" {
		return channel.Notification{}, fmt.Errorf("wechatpay notification %s refused: %w: resource %q of %q (event %s)",
			env.ID, ErrMalformed, env.ResourceType, env.Resource.OriginalType, env.EventType)
	}
	plain, err := Decrypt(c.apiV3Key, env.Resource)
	if err != nil {
		return channel.Notification{}, fmt.Errorf("wechatpay notification %s refused: %w", env.ID, err)
	}
	var t Transaction
	if err := json.Unmarshal(plain, &t); err != nil {
		return channel.Notification{}, fmt.Errorf("wechatpay notification %s refused: %w: transaction: %v", env.ID, ErrMalformed, err)
	}
	if err := c.checkOurs(t, ""); err != nil {
		return channel.Notification{}, fmt.Errorf("wechatpay notification %s refused: %w", env.ID, err)
	}
	if t.OutTradeNo == "" {
		return channel.Notification{}, fmt.Errorf("wechatpay notification %s refused: %w: no out_trade_no", env.ID, ErrMalformed)
	}
	if t.Amount.Total <= 0 {
		return channel.Notification{}, fmt.Errorf("wechatpay notification %s refused: %w: amount.total %d fen", env.ID, ErrMalformed, t.Amount.Total)
	}
	out, err := Outcome(t.TradeState)
	if err != nil {
		return channel.Notification{}, fmt.Errorf("wechatpay notification %s refused: %w", env.ID, err)
	}
	if out == channel.TradePending {
		return channel.Notification{}, fmt.Errorf("wechatpay notification %s refused: %w: trade %s is %s, not final",
			env.ID, ErrMalformed, t.OutTradeNo, t.TradeState)
	}
	return channel.Notification{Channel: channel.Wechat, TradeNo: t.OutTradeNo, Amount: t.Amount.Total,
		Success: out == channel.TradeSucceeded, ProviderTxn: t.TransactionID}, nil
}

// Answers to a notification, as WeChat Pay wants them: success is 204 (200
// also counts) with no body; anything else is 4xx/5xx with
// {"code":"FAIL","message":…}, and WeChat Pay sends the notification again
// (15s, 15s, 30s, 3m, 10m, 20m, 30m, 30m, 30m, 60m, 3h, 3h, 3h, 6h, 6h).
const (
	NotifyOKStatus = http.StatusNoContent
	NotifyFailCode = "FAIL"
)

// NotifyFailBody is the body of a refusal.
func NotifyFailBody(message string) []byte {
	b, _ := json.Marshal(struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}{NotifyFailCode, message})
	return b
}

// WriteNotifyOK acknowledges a notification.
func WriteNotifyOK(w http.ResponseWriter) { w.WriteHeader(NotifyOKStatus) }

// WriteNotifyFail refuses a notification with status (4xx or 5xx).
func WriteNotifyFail(w http.ResponseWriter, status int, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(NotifyFailBody(message))
}

// NotifyHandler serves WeChat Pay's notify URL: it verifies each
// notification and hands it to apply (e.g. packet.Service.Notify). A
// notification that does not verify is answered 401, one apply refuses 500
// (WeChat Pay sends it again later), a good one 204. The messages name what
// failed, never key material.
func (c *Client) NotifyHandler(apply func(ctx context.Context, n channel.Notification) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			WriteNotifyFail(w, http.StatusMethodNotAllowed, "POST only")
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, MaxNotifyBody+1))
		if err != nil || len(body) > MaxNotifyBody {
			WriteNotifyFail(w, http.StatusBadRequest, "unreadable or oversized body")
			return
		}
		n, err := c.VerifyNotification(r.Header, body, c.now())
		if err != nil {
			status := http.StatusUnauthorized
			if errors.Is(err, ErrMalformed) || errors.Is(err, ErrNotOurs) {
				status = http.StatusBadRequest
			}
			WriteNotifyFail(w, status, err.Error())
			return
		}
		if err := apply(r.Context(), n); err != nil {
			WriteNotifyFail(w, http.StatusInternalServerError, "not applied: "+err.Error())
			return
		}
		WriteNotifyOK(w)
	})
}
