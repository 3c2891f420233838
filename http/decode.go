package http

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	nethttp "net/http"
	"reflect"
	"strings"

	"github.com/grab-engine/grab/engine/money"

	"github.com/gin-gonic/gin"
	"github.com/grab-engine/grab/engine/errs"
)

// MaxBodyBytes bounds every request body (docs/api.md: bodies over 64 KiB are rejected).
const MaxBodyBytes = 64 << 10

// decodeBody reads the request body as exactly one JSON object into dst.
// Unknown fields, trailing data, wrong JSON types and an oversized body are
// rejected before any handler logic runs.
func decodeBody(c *gin.Context, dst any) error {
	body, err := readBody(c)
	if err != nil {
		return err
	}
	return decodeJSON(body, dst)
}

// readBody reads the raw request body, at most MaxBodyBytes of it.
func readBody(c *gin.Context) ([]byte, error) {
	body, err := io.ReadAll(nethttp.MaxBytesReader(c.Writer, c.Request.Body, MaxBodyBytes))
	if err != nil {
		var tooBig *nethttp.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, errs.Errorf(errs.CodePayloadTooLarge, "request body is larger than %d bytes", MaxBodyBytes)
		}
		return nil, invalid("cannot read request body")
	}
	return body, nil
}

// decodeJSON is decodeBody's strict decoding of a body already read.
func decodeJSON(body []byte, dst any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return invalid("a JSON request body is required")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return jsonError(err)
	}
	// One object and nothing after it.
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return invalid("unexpected data after the JSON object")
	}
	return checkKeys(body, dst)
}

// checkKeys rejects what encoding/json lets through: a key in another case
// ("Amount" fills amount) and a repeated key (the last would silently win).
func checkKeys(body []byte, dst any) error {
	allowed := map[string]bool{}
	t := reflect.TypeOf(dst).Elem()
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		allowed[name] = true
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil // not an object: null, which decoded to nothing
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return invalid("malformed JSON body")
		}
		key, _ := tok.(string)
		if !allowed[key] {
			return invalid("unknown field %q", key)
		}
		if seen[key] {
			return invalid("field %q appears twice", key)
		}
		seen[key] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return invalid("malformed JSON body")
		}
	}
	return nil
}

// jsonError turns a decoding error into a message that names the field.
func jsonError(err error) error {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr):
		if typeErr.Field == "" {
			return invalid("the request body must be a JSON object")
		}
		return invalid("field %q has the wrong type (%s)", typeErr.Field, typeErr.Value)
	case errors.As(err, &syntaxErr):
		return invalid("malformed JSON at byte %d", syntaxErr.Offset)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return invalid("truncated JSON body")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return invalid("unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
	}
	var ae *errs.Error
	if errors.As(err, &ae) {
		return ae
	}
	return invalid("malformed JSON body")
}

// Money is an amount in fen that travels as a decimal JSON string ("12.34").
// A JSON number is rejected: floats must never carry money.
type Money int64

// UnmarshalJSON implements json.Unmarshaler.
func (m *Money) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil // left unset; the handler reports the missing field
	}
	var s string
	if len(b) == 0 || b[0] != '"' || json.Unmarshal(b, &s) != nil {
		return invalid("amounts are decimal strings such as \"12.34\", not %s", jsonKind(b))
	}
	fen, err := money.Parse(s)
	if err != nil {
		ae, _ := toAPIError(err)
		return errs.New(ae.Code, ae.Message)
	}
	*m = Money(fen)
	return nil
}

// MarshalJSON prints two decimals, as the contract requires.
func (m Money) MarshalJSON() ([]byte, error) {
	return []byte(`"` + money.Format(int64(m)) + `"`), nil
}

func jsonKind(b []byte) string {
	switch {
	case len(b) == 0:
		return "empty"
	case b[0] == '{':
		return "an object"
	case b[0] == '[':
		return "an array"
	case b[0] == 't' || b[0] == 'f':
		return "a boolean"
	default:
		return "a number"
	}
}

// pathID parses a positive decimal id from the path. Anything else is
// INVALID_ARGUMENT; an id that parses but does not exist is the engine's NOT_FOUND.
func pathID(c *gin.Context, name string) (int64, error) {
	id, err := positiveID(c.Param(name))
	if err != nil {
		return 0, invalid("%s must be a positive integer", name)
	}
	return id, nil
}

// requireID checks an id read from a JSON body.
func requireID(name string, v *int64) (int64, error) {
	if v == nil {
		return 0, invalid("%s is required", name)
	}
	if *v <= 0 {
		return 0, invalid("%s must be a positive integer", name)
	}
	return *v, nil
}

func requireMoney(name string, v *Money) (int64, error) {
	if v == nil {
		return 0, invalid("%s is required", name)
	}
	return int64(*v), nil
}

func requireString(name string, v *string) (string, error) {
	if v == nil {
		return "", invalid("%s is required", name)
	}
	return *v, nil
}
