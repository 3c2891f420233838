package lua

import "testing"

func TestPacketKeys(t *testing.T) {
	k := NewKeys("grab", 16)
	got := k.Packet(123)
	want := PacketKeys{
		State:    "grab:{g:11}:pk:123",
		Shares:   "grab:{g:11}:pk:123:shares",
		Grabbed:  "grab:{g:11}:pk:123:grabbed",
		Eligible: "grab:{g:11}:pk:123:eligible",
		Events:   "grab:{g:11}:events",
		LoadLock: "grab:{g:11}:pk:123:loadlock",
	}
	if got != want {
		t.Fatalf("Packet(123) = %+v\nwant %+v", got, want)
	}
	if s := k.Events(7); s != "grab:{g:07}:events" {
		t.Fatalf("Events(7) = %q", s)
	}
	if s := k.DeadLetters(0); s != "grab:{g:00}:dead" {
		t.Fatalf("DeadLetters(0) = %q", s)
	}
}

func TestDefaults(t *testing.T) {
	k := NewKeys("", 0)
	if k.NS != "grab" || k.Shards != 16 {
		t.Fatalf("defaults = %+v", k)
	}
}
