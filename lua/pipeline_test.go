package lua

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// Many callers through few small pipelines: every grab is answered, once,
// with its own reply, and the packet is handed out exactly.
func TestGrabPipelineAnswersEveryCaller(t *testing.T) {
	const users = 500
	_, c, k := setup(t, func(s *PacketState) {
		s.Shares, s.Eligible = nil, nil
		for i := range 200 {
			s.Shares = append(s.Shares, Share{Seq: i + 1, Amount: int64(i + 1)})
		}
		for u := range users {
			s.Eligible = append(s.Eligible, int64(u+1))
		}
	})
	p := NewGrabPipeline(c, 2, 3)

	replies := make([]GrabReply, users+1)
	var wg sync.WaitGroup
	for u := 1; u <= users; u++ {
		wg.Go(func() {
			r, err := p.Grab(context.Background(), k, testPacket, int64(u), testNow, fmt.Sprint("r", u))
			if err != nil {
				t.Errorf("user %d: %v", u, err)
			}
			replies[u] = r
		})
	}
	wg.Wait()

	seqs := map[int]int64{}
	var granted, soldOut int
	var sum int64
	for u := 1; u <= users; u++ {
		switch r := replies[u]; r.Code {
		case GrabGranted:
			if r.Repeat {
				t.Errorf("user %d answered as a repeat", u)
			}
			if prev, ok := seqs[r.Seq]; ok {
				t.Errorf("seq %d went to users %d and %d", r.Seq, prev, u)
			}
			seqs[r.Seq] = int64(u)
			granted++
			sum += r.Amount
		case GrabSoldOut:
			soldOut++
		default:
			t.Errorf("user %d: code %d", u, r.Code)
		}
	}
	if granted != 200 || soldOut != users-200 || sum != 200*201/2 {
		t.Fatalf("granted %d (Σ %d fen), sold out %d; want 200 (Σ 20100), %d", granted, sum, soldOut, users-200)
	}
	// Each grab can be asked again and answers as its own earlier call.
	for u := 1; u <= users; u += 50 {
		r, err := p.Grab(context.Background(), k, testPacket, int64(u), testNow, fmt.Sprint("r", u))
		if err != nil || r != replies[u] {
			t.Fatalf("re-sent grab of user %d = %+v, %v; want %+v", u, r, err, replies[u])
		}
	}
	if p.leaders != 0 || len(p.queue) != 0 {
		t.Fatalf("idle pipeline holds %d leaders and %d queued calls", p.leaders, len(p.queue))
	}
}

// After Redis forgets its scripts, a batch's EVALSHAs fail without running;
// each grab is then sent in full, and runs once.
func TestGrabPipelineAfterScriptFlush(t *testing.T) {
	_, c, k := setup(t, nil)
	ctx := context.Background()
	if err := c.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	p := NewGrabPipeline(c, 1, 8)
	// Hold the only lead so the three grabs leave in one batch.
	p.mu.Lock()
	p.leaders = 1
	p.mu.Unlock()
	var wg sync.WaitGroup
	replies := make([]GrabReply, 3)
	for i, u := range []int64{10, 11, 12} {
		wg.Go(func() {
			var err error
			if replies[i], err = p.Grab(ctx, k, testPacket, u, testNow, fmt.Sprint("r", u)); err != nil {
				t.Error(err)
			}
		})
	}
	// enginetest.WaitFor cannot serve here: it imports lua, and this test is
	// inside lua (an import cycle), so it polls the same way by hand.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Millisecond) {
		p.mu.Lock()
		n := len(p.queue)
		p.mu.Unlock()
		if n == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d grabs queued, want 3", n)
		}
	}
	p.mu.Lock()
	lead := p.queue[0]
	lead.leading = true
	lead.turn <- false
	p.mu.Unlock()
	wg.Wait()

	seqs, soldOut := 0, 0
	for _, r := range replies {
		switch {
		case r.Code == GrabGranted && !r.Repeat:
			seqs += r.Seq
		case r.Code == GrabSoldOut:
			soldOut++
		}
	}
	if seqs != 1+2 || soldOut != 1 {
		t.Fatalf("replies %+v; want seqs 1 and 2 and one sold out", replies)
	}
	if n := c.XLen(ctx, k.Events).Val(); n != 2 {
		t.Fatalf("%d events, want 2", n)
	}
}
