// Package money reads and prints amounts at grab's edges: inside, money is
// int64 fen; the API and the channels' protocols carry it as a decimal
// string of yuan with at most two fraction digits.
package money

import (
	"fmt"
	"regexp"

	"github.com/shopspring/decimal"

	"github.com/grab-engine/grab/engine/errs"
)

// Money at the API edge is a decimal string with at most two fraction digits.
var moneyPattern = regexp.MustCompile(`^[0-9]{1,10}(\.[0-9]{1,2})?$`)

// Parse turns an API money string ("12.34", "5", "0.01") into fen.
// Signs, exponents, more than two decimals and anything else are rejected.
func Parse(s string) (int64, error) {
	if !moneyPattern.MatchString(s) {
		return 0, fmt.Errorf("%w: amount %q must be a decimal string with at most two fraction digits", errs.ErrInvalidArgument, s)
	}
	d, err := decimal.NewFromString(s)
	if err != nil {
		return 0, fmt.Errorf("%w: amount %q: %v", errs.ErrInvalidArgument, s, err)
	}
	return d.Shift(2).IntPart(), nil
}

// Format prints fen as the API's two-decimal string.
func Format(fen int64) string {
	return decimal.New(fen, -2).StringFixed(2)
}
