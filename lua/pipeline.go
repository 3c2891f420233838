package lua

import (
	"context"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Runner runs a script: a client does it in a round trip of its own
// (Direct), a ScriptPipeline in one shared with concurrent calls.
type Runner interface {
	Run(ctx context.Context, s *redis.Script, keys []string, args ...any) *redis.Cmd
}

// Direct runs each script on c in a round trip of its own.
func Direct(c redis.Scripter) Runner { return direct{c} }

type direct struct{ c redis.Scripter }

func (d direct) Run(ctx context.Context, s *redis.Script, keys []string, args ...any) *redis.Cmd {
	return s.Run(ctx, d.c, keys, args...)
}

// ScriptPipeline sends concurrent script calls to Redis together: while a
// pipeline is in flight, the calls that arrive queue up and leave in the
// next one. Redis then reads and answers many scripts per system call
// instead of one, which is most of what a call costs it besides the script
// itself. Packet and campaign grabs (GrabPipeline) and stock deducts go
// this way.
//
// There are no background goroutines: the first caller that finds a free
// pipeline leads it, sending batches for everyone queued; when it is done it
// hands the lead to the oldest waiting caller, so no caller leads for long.
// A batch's scripts still run one by one, each atomically; only the round
// trips are shared. Every call must be safe to run twice (go-redis re-sends
// a whole pipeline after a lost reply): the engine's calls carry their
// idempotency ids.
type ScriptPipeline struct {
	c        redis.Cmdable
	maxBatch int
	maxLead  int

	mu      sync.Mutex
	queue   []*scriptCall
	leaders int
}

// NewScriptPipeline sends calls over at most pipelines concurrent
// pipelines of at most maxBatch calls each.
func NewScriptPipeline(c redis.Cmdable, pipelines, maxBatch int) *ScriptPipeline {
	return &ScriptPipeline{c: c, maxLead: max(pipelines, 1), maxBatch: max(maxBatch, 1)}
}

type scriptCall struct {
	script *redis.Script
	keys   []string
	args   []any
	cmd    *redis.Cmd
	// leading is set while the caller holds a lead; a caller is handed the
	// lead only when it holds none, so turn never has more than one false.
	leading bool
	// turn says false when this caller is to lead the next batch, then true
	// once its own call is answered. It holds both, so neither send blocks.
	turn chan bool
}

// Run implements Runner: s runs in the next pipeline.
func (p *ScriptPipeline) Run(ctx context.Context, s *redis.Script, keys []string, args ...any) *redis.Cmd {
	c := &scriptCall{script: s, keys: keys, args: args, turn: make(chan bool, 2)}
	if err := ctx.Err(); err != nil {
		cmd := redis.NewCmd(ctx)
		cmd.SetErr(err)
		return cmd
	}
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
			return c.cmd
		}
		lead = true
	}
}

// lead sends one batch from the head of the queue, then passes the lead on
// to the oldest queued caller not already leading (own, perhaps, if its
// call did not fit in this batch).
func (p *ScriptPipeline) lead(ctx context.Context, own *scriptCall) {
	p.mu.Lock()
	n := min(len(p.queue), p.maxBatch)
	batch := make([]*scriptCall, n)
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

func (p *ScriptPipeline) send(ctx context.Context, batch []*scriptCall) {
	if len(batch) == 1 {
		c := batch[0]
		c.cmd = c.script.Run(ctx, p.c, c.keys, c.args...)
		return
	}
	// Per-command errors are read from each command below.
	_, _ = p.c.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for _, c := range batch {
			c.cmd = c.script.EvalSha(ctx, pipe, c.keys, c.args...)
		}
		return nil
	})
	for _, c := range batch {
		if redis.HasErrorPrefix(c.cmd.Err(), "NOSCRIPT") {
			// Redis lost its script cache (a restart): the script did not
			// run. Run sends it in full once; the next batch finds it.
			c.cmd = c.script.Run(ctx, p.c, c.keys, c.args...)
		}
	}
}

// GrabPipeline sends concurrent grabs to Redis together (a ScriptPipeline
// of grab.lua calls). Each grab keeps its own request id, so go-redis's
// re-send of a whole pipeline after a lost reply answers every grab as the
// original.
type GrabPipeline struct{ *ScriptPipeline }

// NewGrabPipeline sends grabs over at most pipelines concurrent pipelines of
// at most maxBatch grabs each.
func NewGrabPipeline(c redis.Cmdable, pipelines, maxBatch int) *GrabPipeline {
	return &GrabPipeline{NewScriptPipeline(c, pipelines, maxBatch)}
}

// Grab runs grab.lua for one user, as Grab does, in the next pipeline.
func (p *GrabPipeline) Grab(ctx context.Context, k PacketKeys, packetID, userID, nowMs int64, requestID string) (GrabReply, error) {
	v, err := p.Run(ctx, grabScript, grabKeys(k), userID, nowMs, packetID, requestID).Slice()
	if err != nil {
		return GrabReply{}, err
	}
	return parseGrabReply(v)
}
