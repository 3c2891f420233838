package alipay

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
)

// ErrBadSignature is what a refused signature wraps: a notification or an
// answer that Alipay's public key does not vouch for.
var ErrBadSignature = errors.New("alipay: bad signature")

// SignContent is the text Alipay's RSA2 signature covers: the parameters with
// a non-empty value, except those named in skip, sorted by name and joined as
// "k=v&k=v" with the values as they are (not URL-encoded). A request skips
// "sign"; a notification skips "sign" and "sign_type".
func SignContent(params url.Values, skip ...string) string {
	keys := make([]string, 0, len(params))
	for k, v := range params {
		if len(v) == 0 || v[0] == "" || contains(skip, k) {
			continue
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(params.Get(k))
	}
	return b.String()
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Sign is RSA2: base64 of SHA256withRSA (PKCS #1 v1.5) over content.
func Sign(key *rsa.PrivateKey, content []byte) (string, error) {
	sum := sha256.Sum256(content)
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		return "", fmt.Errorf("alipay: signing: %w", err)
	}
	return base64.StdEncoding.EncodeToString(sig), nil
}

// Verify checks an RSA2 signature (base64) over content; a refusal wraps
// ErrBadSignature.
func Verify(key *rsa.PublicKey, content []byte, sign string) error {
	if sign == "" {
		return fmt.Errorf("%w: no sign", ErrBadSignature)
	}
	sig, err := base64.StdEncoding.DecodeString(sign)
	if err != nil {
		return fmt.Errorf("%w: sign is not base64", ErrBadSignature)
	}
	sum := sha256.Sum256(content)
	if err := rsa.VerifyPKCS1v15(key, crypto.SHA256, sum[:], sig); err != nil {
		return fmt.Errorf("%w: it does not verify with alipay's public key", ErrBadSignature)
	}
	return nil
}

// der is the DER inside a PEM block, or the bare base64 Alipay's key tool
// prints (no header, maybe wrapped). Errors never quote the input.
func der(data []byte, what string) (blockType string, b []byte, err error) {
	if block, _ := pem.Decode(data); block != nil {
		return block.Type, block.Bytes, nil
	}
	s := strings.Join(strings.Fields(string(data)), "")
	b, err = base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) == 0 {
		return "", nil, fmt.Errorf("alipay: %s is neither PEM nor base64 DER", what)
	}
	return "", b, nil
}

// ParsePrivateKey reads the app's RSA private key: PEM (PKCS #1 "RSA PRIVATE
// KEY" or PKCS #8 "PRIVATE KEY") or the bare base64 of either.
func ParsePrivateKey(data []byte) (*rsa.PrivateKey, error) {
	typ, b, err := der(data, "the app private key")
	if err != nil {
		return nil, err
	}
	if typ == "" || typ == "RSA PRIVATE KEY" {
		if k, err := x509.ParsePKCS1PrivateKey(b); err == nil {
			return k, nil
		}
	}
	if typ == "" || typ == "PRIVATE KEY" {
		k, err := x509.ParsePKCS8PrivateKey(b)
		if err == nil {
			if rk, ok := k.(*rsa.PrivateKey); ok {
				return rk, nil
			}
			return nil, errors.New("alipay: the app private key is not an RSA key")
		}
	}
	return nil, fmt.Errorf("alipay: the app private key (PEM %q) is not a PKCS #1 or PKCS #8 RSA key", typ)
}

// ParsePublicKey reads Alipay's RSA public key: PEM ("PUBLIC KEY", PKIX, as
// Alipay shows it; or PKCS #1 "RSA PUBLIC KEY") or the bare base64 of either.
func ParsePublicKey(data []byte) (*rsa.PublicKey, error) {
	typ, b, err := der(data, "the alipay public key")
	if err != nil {
		return nil, err
	}
	if typ == "" || typ == "PUBLIC KEY" {
		if k, err := x509.ParsePKIXPublicKey(b); err == nil {
			if rk, ok := k.(*rsa.PublicKey); ok {
				return rk, nil
			}
			return nil, errors.New("alipay: the alipay public key is not an RSA key")
		}
	}
	if typ == "" || typ == "RSA PUBLIC KEY" {
		if k, err := x509.ParsePKCS1PublicKey(b); err == nil {
			return k, nil
		}
	}
	return nil, fmt.Errorf("alipay: the alipay public key (PEM %q) is not a PKIX or PKCS #1 RSA key", typ)
}
