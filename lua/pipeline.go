package lua

import (
	"context"
	"sync"

	"github.com/redis/go-redis/v9"
)

// GrabPipeline sends concurrent grabs to Redis together: while a pipeline is
// in flight, the grabs that arrive queue up and leave in the next one. Redis
// then reads and answers many scripts per system call instead of one, which
// is most of what a grab costs it besides the script itself.
//
// There are no background goroutines: the first caller that finds a free
// pipeline leads it, sending batches for everyone queued; when it is done it
// hands the lead to the oldest waiting caller, so no caller leads for long.
// A batch's scripts still run one by one, each atomically; only the round
// trips are shared. Each grab keeps its own request id, so go-redis's re-send
// of a whole pipeline after a lost reply answers every grab as the original.
type GrabPipeline struct {
	c        redis.Cmdable
	maxBatch int
	maxLead  int

	mu      sync.Mutex
	queue   []*grabCall
	leaders int
}

// NewGrabPipeline sends grabs over at most pipelines concurrent pipelines of
// at most maxBatch grabs each.
func NewGrabPipeline(c redis.Cmdable, pipelines, maxBatch int) *GrabPipeline {
	return &GrabPipeline{c: c, maxLead: max(pipelines, 1), maxBatch: max(maxBatch, 1)}
}

type grabCall struct {
	keys      PacketKeys
	packetID  int64
	userID    int64
	nowMs     int64
	requestID string

	reply GrabReply
	err   error
	// leading is set while the caller holds a lead; a caller is handed the
	// lead only when it holds none, so turn never has more than one false.
	leading bool
	// turn says false when this caller is to lead the next batch, then true
	// once its own grab is answered. It holds both, so neither send blocks.
	turn chan bool
}

// Grab runs grab.lua for one user, as Grab does, in the next pipeline.
func (p *GrabPipeline) Grab(ctx context.Context, k PacketKeys, packetID, userID, nowMs int64, requestID string) (GrabReply, error) {
	if err := ctx.Err(); err != nil {
		return GrabReply{}, err
	}
	c := &grabCall{keys: k, packetID: packetID, userID: userID, nowMs: nowMs, requestID: requestID, turn: make(chan bool, 2)}
	p.mu.Lock()
	p.queue = append(p.queue, c)
	lead := p.leaders < p.maxLead
	if lead {
		p.leaders++
		c.leading = true
	}
	p.mu.Unlock()
	// A leader must not walk away with the lead, so callers wait for their
	// answer whatever their context says; Redis's timeouts bound the wait.
	ctx = context.WithoutCancel(ctx)
	for {
		if lead {
			p.lead(ctx, c)
		}
		if answered := <-c.turn; answered {
			return c.reply, c.err
		}
		lead = true
	}
}

// lead sends one batch from the head of the queue, then passes the lead on
// to the oldest queued caller not already leading (own, perhaps, if its
// grab did not fit in this batch).
func (p *GrabPipeline) lead(ctx context.Context, own *grabCall) {
	p.mu.Lock()
	n := min(len(p.queue), p.maxBatch)
	batch := make([]*grabCall, n)
	copy(batch, p.queue)
	p.queue = p.queue[n:]
	p.mu.Unlock()

	if n > 0 {
		p.send(ctx, batch)
		for _, c := range batch {
			c.turn <- true
		}
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	own.leading = false
	for _, next := range p.queue {
		if !next.leading {
			next.leading = true
			next.turn <- false
			return
		}
	}
	p.leaders--
	if len(p.queue) == 0 {
		p.queue = nil // let the old backing array go
	}
}

func (p *GrabPipeline) send(ctx context.Context, batch []*grabCall) {
	if len(batch) == 1 {
		c := batch[0]
		c.reply, c.err = Grab(ctx, p.c, c.keys, c.packetID, c.userID, c.nowMs, c.requestID)
		return
	}
	cmds := make([]*redis.Cmd, len(batch))
	// Per-command errors are read from each command below.
	_, _ = p.c.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for i, c := range batch {
			cmds[i] = grabScript.EvalSha(ctx, pipe, grabKeys(c.keys), c.userID, c.nowMs, c.packetID, c.requestID)
		}
		return nil
	})
	for i, c := range batch {
		v, err := cmds[i].Slice()
		switch {
		case redis.HasErrorPrefix(err, "NOSCRIPT"):
			// Redis lost its script cache (a restart): the script did not
			// run. Grab sends it in full once; the next batch finds it.
			c.reply, c.err = Grab(ctx, p.c, c.keys, c.packetID, c.userID, c.nowMs, c.requestID)
		case err != nil:
			c.err = err
		default:
			c.reply, c.err = parseGrabReply(v)
		}
	}
}
