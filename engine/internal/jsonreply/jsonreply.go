// Package jsonreply reads the answers of the JSON services grab calls over
// HTTP (the company payment gateway, the wallet transfer service): both
// answer an error as {"error": code, "detail": text}.
package jsonreply

import (
	"encoding/json"
	"fmt"
)

// Code is the error code of an error answer; "" when body is not one.
func Code(body []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil {
		return ""
	}
	return e.Error
}

// Unexpected is the error for an answer the protocol does not allow: its
// status and the start of its body, enough to recognise a proxy's page.
func Unexpected(status int, body []byte) error {
	const most = 200
	if len(body) > most {
		body = body[:most]
	}
	return fmt.Errorf("unexpected answer %d %q", status, body)
}
