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
		Epoch:    "grab:{g:11}:epoch",
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

func TestCampaignKeys(t *testing.T) {
	got := NewKeys("grab", 16).Campaign(123)
	want := CampaignKeys{
		State:    "grab:{g:11}:cp:123",
		Awards:   "grab:{g:11}:cp:123:awards",
		Users:    "grab:{g:11}:cp:123:users",
		Awarded:  "grab:{g:11}:cp:123:awarded",
		Events:   "grab:{g:11}:events",
		Epoch:    "grab:{g:11}:epoch",
		LoadLock: "grab:{g:11}:cp:123:loadlock",
	}
	if got != want {
		t.Fatalf("Campaign(123) = %+v\nwant %+v", got, want)
	}
	if s := NewKeys("grab", 16).Campaign(7).State; s != "grab:{g:07}:cp:7" {
		t.Fatalf("Campaign(7).State = %q", s)
	}
}

func TestDefaults(t *testing.T) {
	k := NewKeys("", 0)
	if k.NS != "grab" || k.Shards != 16 {
		t.Fatalf("defaults = %+v", k)
	}
}
