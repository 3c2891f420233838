package event

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
)

var updateSchema = flag.Bool("update-schema", false, "rewrite docs/events.schema.json from the payload types")

// payloadTypes are the payload type of every kind.
var payloadTypes = map[string]any{
	MsgPacketPaid: PacketPaid{}, MsgPacketGrabbed: PacketGrabbed{}, MsgPacketCredited: PacketCredited{},
	MsgPacketFinished: PacketFinished{}, MsgPacketRefunded: PacketRefunded{}, MsgPaymentSettled: PaymentSettled{},
	MsgPaymentFailed: PaymentFailed{}, MsgStockChanged: StockChanged{}, MsgCampaignAwarded: CampaignAwarded{},
	MsgPayoutTransferred: PayoutTransferred{}, MsgPayoutNeedsAttention: PayoutNeedsAttention{},
}

const (
	eventsDoc    = "../docs/events.md"
	eventsSchema = "../docs/events.schema.json"
)

// Every kind has one example in docs/events.md, a whole message whose
// payload decodes into the kind's type with no field left over, and whose
// id, aggregate and subject are what the type's Message makes of it.
func TestDocExamples(t *testing.T) {
	doc, err := os.ReadFile(eventsDoc)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, block := range jsonBlocks(string(doc)) {
		var m Message
		if err := strictDecode([]byte(block), &m); err != nil {
			t.Fatalf("an example is not a message: %v\n%s", err, block)
		}
		typ, ok := payloadTypes[m.Kind]
		if !ok {
			t.Fatalf("example of unknown kind %q", m.Kind)
		}
		seen[m.Kind]++
		p := reflect.New(reflect.TypeOf(typ))
		if err := strictDecode(m.Payload, p.Interface()); err != nil {
			t.Errorf("%s: the example's payload is not a %T: %v", m.Kind, typ, err)
			continue
		}
		made := p.MethodByName("Message").Call([]reflect.Value{reflect.ValueOf(m.At)})[0].Interface().(Message)
		if made.ID != m.ID || made.Aggregate != m.Aggregate || made.Kind != m.Kind {
			t.Errorf("%s: the example is %s of %s; its payload makes %s of %s", m.Kind, m.ID, m.Aggregate, made.ID, made.Aggregate)
		}
		if err := checkSchema(t, m.Kind, m.Payload); err != nil {
			t.Errorf("%s: the example does not follow events.schema.json: %v", m.Kind, err)
		}
	}
	for kind := range payloadTypes {
		if seen[kind] != 1 {
			t.Errorf("%s has %d examples in %s, want 1", kind, seen[kind], eventsDoc)
		}
	}
}

// docs/events.schema.json is the JSON Schema of the payload types, as
// schemaDoc makes it; go test -update-schema rewrites it.
func TestDocSchema(t *testing.T) {
	want, err := json.MarshalIndent(schemaDoc(), "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, '\n')
	if *updateSchema {
		if err := os.WriteFile(eventsSchema, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(eventsSchema)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is not the payload types' schema; run go test ./event -run TestDocSchema -update-schema", eventsSchema)
	}
}

// jsonBlocks are the fenced json blocks of a Markdown document.
func jsonBlocks(doc string) []string {
	re := regexp.MustCompile("(?s)```json\n(.*?)```")
	var out []string
	for _, m := range re.FindAllStringSubmatch(doc, -1) {
		out = append(out, m[1])
	}
	return out
}

func strictDecode(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	return d.Decode(v)
}

// moneyPattern is a decimal string of yuan with two decimals.
const moneyPattern = `^-?[0-9]+\.[0-9]{2}$`

// schemaDoc is the JSON Schema (draft 2020-12) of every message: the
// envelope, and per kind its payload's definition.
func schemaDoc() map[string]any {
	defs := map[string]any{}
	var kinds []any
	for kind, typ := range payloadTypes {
		defs[kind] = objectSchema(reflect.TypeOf(typ))
		kinds = append(kinds, kind)
	}
	slices.SortFunc(kinds, func(a, b any) int { return strings.Compare(a.(string), b.(string)) })
	return map[string]any{
		"$schema":              "https://json-schema.org/draft/2020-12/schema",
		"$id":                  "https://github.com/grab-engine/grab/docs/events.schema.json",
		"title":                "grab event message",
		"description":          "An event.Message as published to NATS JetStream (docs/events.md); payload is $defs[kind]. Money is a decimal string of yuan.",
		"type":                 "object",
		"required":             []string{"id", "kind", "aggregate", "at", "payload"},
		"additionalProperties": false,
		"properties": map[string]any{
			"id":        map[string]any{"type": "string"},
			"kind":      map[string]any{"enum": kinds},
			"aggregate": map[string]any{"type": "string", "pattern": "^(packet|campaign|sku):"},
			"at":        map[string]any{"type": "string", "format": "date-time"},
			"payload":   map[string]any{"type": "object"},
		},
		"$defs": defs,
	}
}

// objectSchema is the schema of struct type t as encoding/json writes it:
// an embedded struct's fields are its own, a field without omitempty is
// required, and a string named amount is money.
func objectSchema(t reflect.Type) map[string]any {
	props := map[string]any{}
	var required []string
	var add func(reflect.Type)
	add = func(t reflect.Type) {
		for f := range t.Fields() {
			if f.Anonymous {
				add(f.Type)
				continue
			}
			name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
			props[name] = fieldSchema(name, f.Type)
			if !strings.Contains(opts, "omitempty") {
				required = append(required, name)
			}
		}
	}
	add(t)
	return map[string]any{"type": "object", "required": required, "additionalProperties": false, "properties": props}
}

func fieldSchema(name string, t reflect.Type) map[string]any {
	switch t.Kind() {
	case reflect.String:
		if name == "amount" {
			return map[string]any{"type": "string", "pattern": moneyPattern}
		}
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int64:
		return map[string]any{"type": "integer"}
	case reflect.Slice:
		return map[string]any{"type": "array", "items": objectSchema(t.Elem())}
	}
	panic("event: no schema for " + t.String())
}

// checkSchema checks payload against the kind's definition in the schema
// file: its required fields, no other fields, each value's JSON type, and
// money's pattern (array items by the same rules).
func checkSchema(t *testing.T, kind string, payload json.RawMessage) error {
	t.Helper()
	b, err := os.ReadFile(eventsSchema)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Defs map[string]json.RawMessage `json:"$defs"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	var schema, value any
	if err := json.Unmarshal(doc.Defs[kind], &schema); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(payload, &value); err != nil {
		t.Fatal(err)
	}
	return matches(schema.(map[string]any), value, kind)
}

func matches(s map[string]any, v any, at string) error {
	ok := false
	switch s["type"] {
	case "object":
		obj, isObj := v.(map[string]any)
		if !isObj {
			break
		}
		props := s["properties"].(map[string]any)
		for _, r := range s["required"].([]any) {
			if _, has := obj[r.(string)]; !has {
				return &schemaError{at, "lacks " + r.(string)}
			}
		}
		for k, x := range obj {
			ps, known := props[k]
			if !known {
				return &schemaError{at, "has no field " + k}
			}
			if err := matches(ps.(map[string]any), x, at+"."+k); err != nil {
				return err
			}
		}
		return nil
	case "array":
		arr, isArr := v.([]any)
		if !isArr {
			break
		}
		for _, x := range arr {
			if err := matches(s["items"].(map[string]any), x, at+"[]"); err != nil {
				return err
			}
		}
		return nil
	case "string":
		str, isStr := v.(string)
		pat, hasPat := s["pattern"].(string)
		ok = isStr && (!hasPat || regexp.MustCompile(pat).MatchString(str))
	case "boolean":
		_, ok = v.(bool)
	case "integer":
		f, isNum := v.(float64)
		ok = isNum && f == float64(int64(f))
	}
	if !ok {
		return &schemaError{at, "is not " + s["type"].(string)}
	}
	return nil
}

type schemaError struct{ at, what string }

func (e *schemaError) Error() string { return e.at + " " + e.what }
