package outbox

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/grab-engine/grab/event"
)

// EnsureStream creates the stream name over every grab subject ("grab.>"),
// on file storage, keeping messages for retention and dropping a message
// whose id it saw in the last duplicates (the relay's republish after a
// crash), or updates it to that configuration when it exists.
func EnsureStream(ctx context.Context, js jetstream.JetStream, name string, retention, duplicates time.Duration) error {
	return ensureStream(ctx, js, name, event.SubjectPrefix, retention, duplicates)
}

// ensureStream is EnsureStream over prefix.> instead of grab.>.
func ensureStream(ctx context.Context, js jetstream.JetStream, name, prefix string, retention, duplicates time.Duration) error {
	if duplicates > retention {
		return fmt.Errorf("outbox: the duplicate window (%v) must not exceed the retention (%v)", duplicates, retention)
	}
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:       name,
		Subjects:   []string{prefix + ".>"},
		Storage:    jetstream.FileStorage,
		MaxAge:     retention,
		Duplicates: duplicates,
	})
	if err != nil {
		return fmt.Errorf("outbox: stream %s: %w", name, err)
	}
	return nil
}

// StartEmbedded runs a NATS server with JetStream in this process, storing
// under dir, on a free loopback port; it answers the server's URL and stop,
// which shuts it down and waits until it has.
func StartEmbedded(dir string) (url string, stop func(), err error) {
	s, err := server.NewServer(&server.Options{
		Host:      "127.0.0.1",
		Port:      server.RANDOM_PORT,
		JetStream: true,
		StoreDir:  dir,
		NoSigs:    true,
		NoLog:     true,
	})
	if err != nil {
		return "", nil, fmt.Errorf("embedded nats: %w", err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return "", nil, errors.New("embedded nats: not ready after 10s")
	}
	return s.ClientURL(), func() { s.Shutdown(); s.WaitForShutdown() }, nil
}
