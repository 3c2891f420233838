package lua

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// ErrUnexpectedReply means a script answered in a shape its wrapper does not know.
var ErrUnexpectedReply = errors.New("lua: unexpected script reply")

// replyCode is the integer code that starts a script's reply.
func replyCode(v []any, script string) (int64, error) {
	if len(v) == 0 {
		return 0, fmt.Errorf("%w: empty %s reply", ErrUnexpectedReply, script)
	}
	code, ok := v[0].(int64)
	if !ok {
		return 0, fmt.Errorf("%w: %s code %T", ErrUnexpectedReply, script, v[0])
	}
	return code, nil
}

func intString(v any) (int64, error) {
	s, ok := v.(string)
	if !ok {
		return 0, fmt.Errorf("%w: %T is not an integer string", ErrUnexpectedReply, v)
	}
	return strconv.ParseInt(s, 10, 64)
}

// pipelined runs fn's commands in one round trip; a missing key or field
// (redis.Nil) is not an error: the commands answer their zero values.
func pipelined(ctx context.Context, c redis.Cmdable, fn func(redis.Pipeliner)) error {
	_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
		fn(p)
		return nil
	})
	if errors.Is(err, redis.Nil) {
		return nil
	}
	return err
}

// doneStrings is the payload of a reply {0, s…} of script: n strings, or
// any number when n < 0. Any other code is unexpected.
func doneStrings(v []any, script string, n int) ([]string, error) {
	code, err := replyCode(v, script)
	if err != nil {
		return nil, err
	}
	if code != 0 || n >= 0 && len(v) != n+1 {
		return nil, fmt.Errorf("%w: %s reply %v", ErrUnexpectedReply, script, v)
	}
	out := make([]string, len(v)-1)
	for i, x := range v[1:] {
		s, ok := x.(string)
		if !ok {
			return nil, fmt.Errorf("%w: %s reply %v", ErrUnexpectedReply, script, v)
		}
		out[i] = s
	}
	return out, nil
}

// onlyCode is the code of a reply {code} of script, one of codes.
func onlyCode(v []any, script string, codes ...int64) (int64, error) {
	code, err := replyCode(v, script)
	if err != nil {
		return 0, err
	}
	if len(v) != 1 || !slices.Contains(codes, code) {
		return 0, fmt.Errorf("%w: %s reply %v", ErrUnexpectedReply, script, v)
	}
	return code, nil
}
