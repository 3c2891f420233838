package storetest

import (
	"io"
	"log"
	"net"
	"sync"
	"testing"

	"github.com/go-sql-driver/mysql"

	"github.com/grab-engine/grab/store"
)

// Outage is a TCP proxy in front of the database that a test can cut, as a
// network partition or a dead server would: while cut, open connections are
// closed and new ones are dropped at once.
type Outage struct {
	target string
	l      net.Listener
	mu     sync.Mutex
	cut    bool
	conns  map[net.Conn]struct{}
}

// MySQLWithOutage is MySQL with the store connected through an Outage.
func MySQLWithOutage(tb testing.TB) (*store.DB, *Outage) {
	tb.Helper()
	cfg := createDatabase(tb)
	// The driver logs every connection the outage breaks; those are expected.
	mysql.SetLogger(log.New(io.Discard, "", 0))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	o := &Outage{target: cfg.Addr, l: l, conns: map[net.Conn]struct{}{}}
	go o.accept()
	tb.Cleanup(func() { l.Close(); o.Cut() })
	cfg.Addr = l.Addr().String()
	return open(tb, cfg), o
}

// Cut drops every connection and refuses new ones until Restore.
func (o *Outage) Cut() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.cut = true
	for c := range o.conns {
		c.Close()
	}
	o.conns = map[net.Conn]struct{}{}
}

// Restore lets connections through again.
func (o *Outage) Restore() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.cut = false
}

func (o *Outage) accept() {
	for {
		c, err := o.l.Accept()
		if err != nil {
			return
		}
		go o.serve(c)
	}
}

func (o *Outage) serve(client net.Conn) {
	o.mu.Lock()
	if o.cut {
		o.mu.Unlock()
		client.Close()
		return
	}
	server, err := net.Dial("tcp", o.target)
	if err != nil {
		o.mu.Unlock()
		client.Close()
		return
	}
	o.conns[client], o.conns[server] = struct{}{}, struct{}{}
	o.mu.Unlock()
	go func() { io.Copy(server, client); server.Close() }()
	io.Copy(client, server)
	client.Close()
}
