package engine

import (
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/grab-engine/grab/lua"
)

// zeroFields names the fields of v (a struct) that are zero, nested
// structs by their path; skip names fields that may stay zero.
func zeroFields(v reflect.Value, prefix string, skip map[string]bool) []string {
	var zero []string
	for i := range v.NumField() {
		name := prefix + v.Type().Field(i).Name
		switch f := v.Field(i); {
		case skip[name]:
		case f.Kind() == reflect.Struct:
			zero = append(zero, zeroFields(f, name+".", skip)...)
		case f.IsZero():
			zero = append(zero, name)
		}
	}
	return zero
}

// skipZero are the fields no default fills: MaxAttempts is deprecated and
// ignored; TransferRate's zero (unlimited) is its default.
var skipZero = map[string]bool{"Writer.MaxAttempts": true, "TransferRate": true}

// A zero Config comes out with every field set, to DefaultConfig's values.
func TestWithDefaultsFillsEveryField(t *testing.T) {
	got := Config{}.withDefaults()
	if zero := zeroFields(reflect.ValueOf(got), "", skipZero); len(zero) > 0 {
		t.Fatalf("left zero: %s", strings.Join(zero, ", "))
	}
	want := DefaultConfig()
	want.Writer.Consumer = got.Writer.Consumer // host-pid, computed
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Config{}.withDefaults() = %+v\nwant DefaultConfig() %+v", got, want)
	}
	if zero := zeroFields(reflect.ValueOf(DefaultConfig()), "", map[string]bool{"Writer.MaxAttempts": true, "Writer.Consumer": true, "TransferRate": true}); len(zero) > 0 {
		t.Fatalf("DefaultConfig leaves zero: %s", strings.Join(zero, ", "))
	}
}

// Set fields stay; only zero ones are filled; negative GrabPipelines stays
// off; a namespace alone keeps the default shard count.
func TestWithDefaultsKeepsSetFields(t *testing.T) {
	c := Config{Keys: nsOnly("t"), PacketTTL: time.Minute, GrabPipelines: -1,
		Writer: WriterConfig{Consumer: "c1", Block: 50 * time.Millisecond, RetryMin: time.Second}}.withDefaults()
	d := DefaultConfig()
	if c.Keys != lua.NewKeys("t", 16) || c.PacketTTL != time.Minute || c.GrabPipelines != -1 || c.LagLimit != d.LagLimit ||
		c.Writer.Consumer != "c1" || c.Writer.Block != 50*time.Millisecond || c.Writer.Batch != d.Writer.Batch {
		t.Fatalf("withDefaults = %+v", c)
	}
	// RetryMax never below RetryMin.
	if c.Writer.RetryMin != time.Second || c.Writer.RetryMax != time.Second {
		t.Fatalf("retry %v..%v", c.Writer.RetryMin, c.Writer.RetryMax)
	}
}

// nsOnly is a namespace with no shard count.
func nsOnly(ns string) lua.Keys { return lua.Keys{NS: ns} }

// Request ids are unique within a process and cost one allocation: every
// grab takes one.
func TestRequestID(t *testing.T) {
	a, b := RequestID(), RequestID()
	na, errA := strconv.ParseUint(strings.TrimPrefix(a, requestPrefix), 36, 64)
	nb, errB := strconv.ParseUint(strings.TrimPrefix(b, requestPrefix), 36, 64)
	if !strings.HasPrefix(a, requestPrefix) || errA != nil || errB != nil || nb != na+1 {
		t.Fatalf("request ids %q, %q", a, b)
	}
	if n := testing.AllocsPerRun(100, func() { RequestID() }); n != 1 {
		t.Fatalf("RequestID allocates %v times, want 1", n)
	}
}
