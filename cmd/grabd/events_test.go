package main

import (
	"encoding/json"
	"io"
	nethttp "net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/grab-engine/grab/engine/enginetest"
	"github.com/grab-engine/grab/engine/outbox"
	"github.com/grab-engine/grab/event"
	"github.com/grab-engine/grab/events"
	"github.com/grab-engine/grab/events/eventstest"
)

// The embedded mode relays the outbox to GRAB_NATS_URL: a packet's two
// grabs reach the stream GRAB once each, on their subjects.
func TestEmbeddedEvents(t *testing.T) {
	url, stop, err := outbox.StartEmbedded(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop) // after grabd's own cleanup
	g := startEmbedded(t, "GRAB_NATS_URL", url)
	id := g.sendPacket(t)
	g.call(t, "POST", "/v1/packets/"+id+"/grab", "", as(2), 200)
	g.call(t, "POST", "/v1/packets/"+id+"/grab", "", as(3), 200)

	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	var grabbed map[string]string // subject by event id
	enginetest.WaitFor(t, "both grabs in the stream", func() bool {
		grabbed = map[string]string{}
		for _, m := range eventstest.Read(t, js, "GRAB") {
			if m.Message.Kind == event.MsgPacketGrabbed && m.Message.Aggregate == "packet:"+id {
				if _, dup := grabbed[m.Message.ID]; dup {
					t.Fatalf("event %s twice in the stream", m.Message.ID)
				}
				grabbed[m.Message.ID] = m.Subject
			}
		}
		return len(grabbed) == 2
	})
	for _, subject := range grabbed {
		if subject != "grab.packet.grabbed."+id {
			t.Errorf("a grab of packet %s on %s", id, subject)
		}
	}
}

// The embedded mode with GRAB_WEBHOOK_URL posts a packet's grab to it,
// signed with GRAB_WEBHOOK_SECRET and named by its headers.
func TestEmbeddedWebhooks(t *testing.T) {
	const secret = "hook-secret"
	type post struct {
		id, kind string
		msg      event.Message
	}
	posts := make(chan post, 64)
	hook := httptest.NewServer(nethttp.HandlerFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			w.WriteHeader(500)
			return
		}
		if err := events.VerifySignature([]byte(secret), r.Header.Get(events.SignatureHeader), body, time.Now(), time.Minute); err != nil {
			t.Errorf("a post badly signed: %v", err)
		}
		var m event.Message
		if err := json.Unmarshal(body, &m); err != nil {
			t.Errorf("a post that is not an event: %v: %s", err, body)
		}
		posts <- post{r.Header.Get(events.EventIDHeader), r.Header.Get(events.EventKindHeader), m}
	}))
	t.Cleanup(hook.Close) // after grabd's own cleanup
	g := startEmbedded(t, "GRAB_WEBHOOK_URL", hook.URL+"/grab", "GRAB_WEBHOOK_SECRET", secret,
		"GRAB_WEBHOOK_KINDS", event.MsgPacketGrabbed)
	id := g.sendPacket(t)
	g.call(t, "POST", "/v1/packets/"+id+"/grab", "", as(2), 200)

	select {
	case p := <-posts:
		if p.kind != event.MsgPacketGrabbed || p.msg.Kind != p.kind || p.id != p.msg.ID || p.msg.Aggregate != "packet:"+id {
			t.Fatalf("posted %s %s: %+v; want the grab of packet %s", p.kind, p.id, p.msg, id)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no webhook post for the grab")
	}
}
