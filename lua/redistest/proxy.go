package redistest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// Proxy is a TCP proxy in front of a Redis server that can lose a reply:
// the command reaches Redis and runs, but the client never hears back, as
// when the network fails between the two. Clients connect to Addr.
type Proxy struct {
	Addr    string
	target  string
	l       net.Listener
	mu      sync.Mutex
	match   func(args []string) bool // armed: the command whose reply to drop
	dropped atomic.Int64
	wg      sync.WaitGroup
	conns   map[net.Conn]struct{}
	closed  bool
}

// StartProxy listens on a free loopback port and forwards to target. It is
// stopped when the test ends.
func StartProxy(tb testing.TB, target string) *Proxy {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &Proxy{Addr: l.Addr().String(), target: target, l: l, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	tb.Cleanup(p.Close)
	return p
}

// DropReplyOnce arms the proxy: the next command for which match reports
// true (args are the command and its arguments as sent) is forwarded, and
// then its reply is discarded and the client's connection closed.
func (p *Proxy) DropReplyOnce(match func(args []string) bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.match = match
}

// Dropped is how many replies the proxy has dropped.
func (p *Proxy) Dropped() int { return int(p.dropped.Load()) }

// Close stops listening and closes every connection.
func (p *Proxy) Close() {
	p.l.Close()
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.l.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			client.Close()
			continue
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			client.Close()
			server.Close()
			return
		}
		p.conns[client], p.conns[server] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		var dropNext atomic.Bool
		closeBoth := func() {
			client.Close()
			server.Close()
			p.mu.Lock()
			delete(p.conns, client)
			delete(p.conns, server)
			p.mu.Unlock()
		}
		go func() { // client -> server, one command at a time
			defer p.wg.Done()
			defer closeBoth()
			r := bufio.NewReader(client)
			for {
				raw, args, err := readCommand(r)
				if err != nil {
					return
				}
				p.mu.Lock()
				if p.match != nil && p.match(args) {
					p.match = nil
					// Set before forwarding: the reply cannot come earlier, and the
					// client waits for the previous reply before it sends a command.
					dropNext.Store(true)
				}
				p.mu.Unlock()
				if _, err := server.Write(raw); err != nil {
					return
				}
			}
		}()
		go func() { // server -> client
			defer p.wg.Done()
			defer closeBoth()
			buf := make([]byte, 32<<10)
			for {
				n, err := server.Read(buf)
				if n > 0 {
					if dropNext.Load() {
						p.dropped.Add(1)
						return
					}
					if _, err := client.Write(buf[:n]); err != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
}

// readCommand reads one RESP command (an array of bulk strings, as clients
// send them) and returns its bytes and its arguments.
func readCommand(r *bufio.Reader) (raw []byte, args []string, err error) {
	line, err := r.ReadBytes('\n')
	if err != nil {
		return nil, nil, err
	}
	raw = append(raw, line...)
	if line[0] != '*' { // an inline command
		return raw, strings.Fields(string(line)), nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(line[1:])))
	if err != nil {
		return nil, nil, fmt.Errorf("proxy: bad array header %q", line)
	}
	for i := 0; i < n; i++ {
		hdr, err := r.ReadBytes('\n')
		if err != nil {
			return nil, nil, err
		}
		if hdr[0] != '$' {
			return nil, nil, errors.New("proxy: command argument is not a bulk string")
		}
		size, err := strconv.Atoi(strings.TrimSpace(string(hdr[1:])))
		if err != nil || size < 0 {
			return nil, nil, fmt.Errorf("proxy: bad bulk header %q", hdr)
		}
		body := make([]byte, size+2)
		if _, err := io.ReadFull(r, body); err != nil {
			return nil, nil, err
		}
		raw = append(raw, hdr...)
		raw = append(raw, body...)
		args = append(args, string(body[:size]))
	}
	return raw, args, nil
}
