// Package eventstest gives tests of event consumers a JetStream stream of
// their own on the real NATS server of NATS_URL, and a private nats-server
// process to kill and restart.
package eventstest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/grab-engine/grab/engine/enginetest"
	"github.com/grab-engine/grab/event"
)

// URL is the shared NATS server of NATS_URL (nats.DefaultURL when unset).
func URL() string {
	if u := os.Getenv("NATS_URL"); u != "" {
		return u
	}
	return nats.DefaultURL
}

// Connect connects to url for the rest of the test, reconnecting for ever
// after an outage. An unreachable server fails the test: integration tests
// are never silently skipped (they are under -short).
func Connect(tb testing.TB, url string) jetstream.JetStream {
	tb.Helper()
	if testing.Short() {
		tb.Skip("integration test: needs NATS (run without -short)")
	}
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		tb.Fatalf("NATS at %s is required for integration tests: %v", url, err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	return js
}

// Stream is a stream of the test's own, deleted when the test ends. Its
// subjects live under Prefix in place of "grab", so tests running at once,
// and a real GRAB stream, never overlap.
type Stream struct {
	JS     jetstream.JetStream
	Name   string
	Prefix string
	tb     testing.TB
}

// NewStream creates a stream on the shared server with the given duplicate
// window (0: the server's default of 2 minutes).
func NewStream(tb testing.TB, dupWindow time.Duration) *Stream {
	tb.Helper()
	js := Connect(tb, URL())
	var b [6]byte
	rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	s := &Stream{JS: js, Name: "EVTEST_" + strings.ToUpper(id), Prefix: "evtest" + id, tb: tb}
	_, err := js.CreateStream(context.Background(), jetstream.StreamConfig{
		Name: s.Name, Subjects: []string{s.Prefix + ".>"}, Storage: jetstream.MemoryStorage, Duplicates: dupWindow,
	})
	if err != nil {
		tb.Fatalf("create stream %s: %v", s.Name, err)
	}
	tb.Cleanup(func() { _ = js.DeleteStream(context.Background(), s.Name) })
	return s
}

// Subject is where the stream holds m: m.Subject() under Prefix.
func (s *Stream) Subject(m event.Message) string { return s.Filter(m.Subject()) }

// Filter is a grab subject ("grab.packet.>") under Prefix.
func (s *Stream) Filter(subject string) string {
	return s.Prefix + strings.TrimPrefix(subject, event.SubjectPrefix)
}

// Publish publishes m as the relay does (Nats-Msg-Id = m.ID) and reports
// whether the stream took it as a duplicate.
func (s *Stream) Publish(m event.Message) (duplicate bool) {
	s.tb.Helper()
	body, err := json.Marshal(m)
	if err != nil {
		s.tb.Fatal(err)
	}
	ack, err := s.JS.Publish(context.Background(), s.Subject(m), body, jetstream.WithMsgID(m.ID))
	if err != nil {
		s.tb.Fatalf("publish %s: %v", m.ID, err)
	}
	return ack.Duplicate
}

// PublishRaw publishes a body that need not be an event to a grab subject.
func (s *Stream) PublishRaw(subject string, body []byte) {
	s.tb.Helper()
	if _, err := s.JS.Publish(context.Background(), s.Filter(subject), body); err != nil {
		s.tb.Fatal(err)
	}
}

// Settled waits until the durable consumer has every message of its filter
// delivered and acked (or terminated): nothing pending, nothing awaiting an
// ack, and its ack floor at or past lastSeq, the stream sequence of the last
// message of its filter (the floor may also pass later messages outside the
// filter).
func (s *Stream) Settled(durable string, lastSeq uint64) {
	s.tb.Helper()
	enginetest.WaitFor(s.tb, durable+" settled", func() bool {
		c, err := s.JS.Consumer(context.Background(), s.Name, durable)
		if err != nil {
			return false
		}
		info, err := c.Info(context.Background())
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0 && info.AckFloor.Stream >= lastSeq
	})
}

// Server is a nats-server process of the test's own, with JetStream kept in
// a directory that outlives a restart; it is killed when the test ends.
type Server struct {
	URL  string
	tb   testing.TB
	port int
	dir  string
	cmd  *exec.Cmd
}

// StartServer starts a private nats-server on a free loopback port.
func StartServer(tb testing.TB) *Server {
	tb.Helper()
	if testing.Short() {
		tb.Skip("integration test: starts nats-server (run without -short)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	s := &Server{URL: fmt.Sprintf("nats://127.0.0.1:%d", port), tb: tb, port: port, dir: tb.TempDir()}
	s.Start()
	tb.Cleanup(s.Kill)
	return s
}

// Start starts the server (again, after Kill) and waits until it listens.
func (s *Server) Start() {
	s.tb.Helper()
	bin, err := exec.LookPath("nats-server")
	if err != nil {
		s.tb.Fatalf("nats-server is required on the PATH: %v", err)
	}
	s.cmd = exec.Command(bin, "-js", "-a", "127.0.0.1", "-p", fmt.Sprint(s.port), "-sd", s.dir)
	if err := s.cmd.Start(); err != nil {
		s.tb.Fatalf("nats-server: %v", err)
	}
	enginetest.WaitFor(s.tb, "nats-server to listen", func() bool {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", s.port))
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// Kill stops the server at once, as a crash does.
func (s *Server) Kill() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
		s.cmd = nil
	}
}

// Streamed is one message a stream holds: its subject, stream sequence,
// Nats-Msg-Id header and the event it carries.
type Streamed struct {
	Subject string
	Seq     uint64
	MsgID   string
	Message event.Message
}

// Read answers every message the stream holds, in its order, through an
// ordered consumer; none when the stream does not exist yet. A body that is
// not an event fails the test.
func Read(tb testing.TB, js jetstream.JetStream, name string) []Streamed {
	tb.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		tb.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	total := int(info.State.Msgs)
	if total == 0 {
		return nil
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		tb.Fatal(err)
	}
	out := make([]Streamed, 0, total)
	for len(out) < total {
		batch, err := c.Fetch(min(1000, total-len(out)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			tb.Fatal(err)
		}
		got := 0
		for raw := range batch.Messages() {
			got++
			meta, err := raw.Metadata()
			if err != nil {
				tb.Fatal(err)
			}
			var m event.Message
			if err := json.Unmarshal(raw.Data(), &m); err != nil {
				tb.Fatalf("message %d: %v", meta.Sequence.Stream, err)
			}
			out = append(out, Streamed{Subject: raw.Subject(), Seq: meta.Sequence.Stream,
				MsgID: raw.Headers().Get(jetstream.MsgIDHeader), Message: m})
		}
		if err := batch.Error(); err != nil {
			tb.Fatal(err)
		}
		if got == 0 {
			tb.Fatalf("read %d of the stream's %d messages, then nothing", len(out), total)
		}
	}
	return out
}
