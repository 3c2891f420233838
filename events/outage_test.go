package events

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/grab-engine/grab/engine/enginetest"
	"github.com/grab-engine/grab/event"
)

// privateNATS is a nats-server process of the test's own, with JetStream
// kept in a directory that outlives a restart.
type privateNATS struct {
	t    *testing.T
	port int
	dir  string
	cmd  *exec.Cmd
}

func startPrivateNATS(t *testing.T) *privateNATS {
	if testing.Short() {
		t.Skip("integration test: starts nats-server (run without -short)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	n := &privateNATS{t: t, port: port, dir: t.TempDir()}
	n.start()
	t.Cleanup(n.kill)
	return n
}

func (n *privateNATS) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.port) }

func (n *privateNATS) start() {
	n.t.Helper()
	bin, err := exec.LookPath("nats-server")
	if err != nil {
		bin = "/usr/sbin/nats-server"
	}
	n.cmd = exec.Command(bin, "-js", "-a", "127.0.0.1", "-p", fmt.Sprint(n.port), "-sd", n.dir)
	if err := n.cmd.Start(); err != nil {
		n.t.Fatalf("nats-server: %v", err)
	}
	enginetest.WaitFor(n.t, "nats-server to listen", func() bool {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", n.port))
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// kill stops the server at once, as a crash does.
func (n *privateNATS) kill() {
	if n.cmd != nil && n.cmd.Process != nil {
		_ = n.cmd.Process.Kill()
		_ = n.cmd.Wait()
		n.cmd = nil
	}
}

// A consumer outlives its NATS server going down: once the server is back
// it handles what was published since, and nothing twice.
func TestConsumeSurvivesNATSRestart(t *testing.T) {
	srv := startPrivateNATS(t)
	nc, err := nats.Connect(srv.url(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: DefaultStream, Subjects: []string{"grab.>"}}); err != nil {
		t.Fatal(err)
	}
	publish := func(m event.Message) {
		t.Helper()
		body, _ := json.Marshal(m)
		if _, err := js.Publish(ctx, m.Subject(), body, jetstream.WithMsgID(m.ID)); err != nil {
			t.Fatalf("publish %s: %v", m.ID, err)
		}
	}
	rec := newRecorder(nil)
	stop := run(t, js, ConsumerConfig{Durable: "points", Log: enginetest.QuietLog()}, rec.handle)
	publish(msg("grab:1:0", event.MsgPacketGrabbed, "packet:1"))
	enginetest.WaitFor(t, "the first event", func() bool { return rec.count() == 1 })

	srv.kill()
	srv.start()
	enginetest.WaitFor(t, "the client to reconnect", nc.IsConnected)
	enginetest.WaitFor(t, "JetStream to answer again", func() bool {
		_, err := js.Stream(ctx, DefaultStream)
		return err == nil
	})
	publish(msg("grab:1:1", event.MsgPacketGrabbed, "packet:1"))
	enginetest.WaitFor(t, "the event published after the restart", func() bool { return rec.count() == 2 })
	if err := stop(); err != nil {
		t.Errorf("Consume = %v, want nil after its context ended", err)
	}
	if _, got := rec.snapshot(); !slices.Equal(got, []string{"grab:1:0", "grab:1:1"}) {
		t.Errorf("handled %v, want each event once", got)
	}
}
