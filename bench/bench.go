// Package bench drives the engine under load: synthetic packets loaded
// straight into Redis, a grab loop for each engine under test, and the raw
// probe script that tells what Redis itself can do on this machine.
package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/lua"
)

// SharesPerPacket is the size of every synthetic packet: the product's maximum.
const SharesPerPacket = 100

// firstPacketID keeps synthetic packets clear of real ones.
const firstPacketID = 1_000_000_000

// Grabber is one engine under test: Grab makes the i-th grab of a run, which
// goes to packet i / SharesPerPacket by user i % SharesPerPacket + 1.
type Grabber interface {
	Name() string
	Grab(ctx context.Context, i int64) error
}

// LoadPackets puts n open packets of SharesPerPacket one-fen shares straight
// into Redis, each grabbable by users 1..SharesPerPacket. The store is not
// involved: this measures the grab path alone.
func LoadPackets(ctx context.Context, rdb redis.UniversalClient, keys lua.Keys, n int, expires time.Time) error {
	eligible := make([]int64, SharesPerPacket)
	shares := make([]lua.Share, SharesPerPacket)
	for i := range shares {
		shares[i] = lua.Share{Seq: i + 1, Amount: 1}
		eligible[i] = int64(i + 1)
	}
	st := lua.PacketState{Status: engine.StatusOpen, Credit: true, ExpiresAtMs: expires.UnixMilli(),
		KeepUntilMs: expires.Add(time.Hour).UnixMilli(),
		Shares:      shares, Eligible: eligible}
	return parallel(ctx, n, func(ctx context.Context, i int) error {
		_, err := lua.Load(ctx, rdb, keys.Packet(firstPacketID+int64(i)), st)
		return err
	})
}

// LoadProbe puts n share lists for the raw probe script into Redis.
func LoadProbe(ctx context.Context, rdb redis.UniversalClient, keys lua.Keys, n int) error {
	shares := make([]any, SharesPerPacket)
	for i := range shares {
		shares[i] = lua.EncodeShare(lua.Share{Seq: i + 1, Amount: 1}, i == len(shares)-1)
	}
	return parallel(ctx, n, func(ctx context.Context, i int) error {
		return rdb.RPush(ctx, keys.Probe(firstPacketID+int64(i)).Shares, shares...).Err()
	})
}

func parallel(ctx context.Context, n int, fn func(context.Context, int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1) - 1; i < int64(n); i = next.Add(1) - 1 {
				if err := fn(ctx, int(i)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func target(i int64) (packetID, userID int64) {
	return firstPacketID + i/SharesPerPacket, i%SharesPerPacket + 1
}

// Raw grabs with the probe script through Script.Run: the physical-limit probe.
type Raw struct {
	Redis redis.UniversalClient
	Keys  lua.Keys
}

// Name implements Grabber.
func (Raw) Name() string { return "raw" }

// Grab implements Grabber.
func (r Raw) Grab(ctx context.Context, i int64) error {
	packetID, userID := target(i)
	ok, err := lua.Probe(ctx, r.Redis, r.Keys.Probe(packetID), userID, time.Now().UnixMilli())
	if err == nil && !ok {
		err = fmt.Errorf("probe %d: no share for user %d", packetID, userID)
	}
	return err
}

// Engine grabs through the engine in-process.
type Engine struct {
	Engine *engine.Engine
}

// Name implements Grabber.
func (Engine) Name() string { return "engine" }

// Grab implements Grabber.
func (e Engine) Grab(ctx context.Context, i int64) error {
	packetID, userID := target(i)
	r, err := e.Engine.Grab(ctx, packetID, userID)
	if err == nil && r.Repeat {
		err = fmt.Errorf("packet %d: user %d got a repeat", packetID, userID)
	}
	return err
}

// Result is what one run measured.
type Result struct {
	Engine  string
	Grabs   int64
	Errors  int64
	Elapsed time.Duration
}

// PerSecond is the throughput of the run.
func (r Result) PerSecond() float64 { return float64(r.Grabs) / r.Elapsed.Seconds() }

// Run makes grabs with g from `workers` goroutines until `grabs` are done or ctx ends.
func Run(ctx context.Context, g Grabber, workers int, grabs int64) Result {
	var next, errs atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1) - 1; i < grabs && ctx.Err() == nil; i = next.Add(1) - 1 {
				if g.Grab(ctx, i) != nil {
					errs.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	done := min(next.Load(), grabs)
	return Result{Engine: g.Name(), Grabs: done, Errors: errs.Load(), Elapsed: time.Since(start)}
}

// HTTP grabs through grabd's API with a plain HTTP client. The server must
// accept X-User-Id (embedded mode or GRAB_AUTH=dev).
type HTTP struct {
	URL    string // e.g. http://127.0.0.1:8080
	Client *http.Client
}

// Name implements Grabber.
func (HTTP) Name() string { return "http" }

// Grab implements Grabber.
func (h HTTP) Grab(ctx context.Context, i int64) error {
	packetID, userID := target(i)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL+"/v1/packets/"+strconv.FormatInt(packetID, 10)+"/grab", nil)
	if err != nil {
		return err
	}
	req.Header.Set("X-User-Id", strconv.FormatInt(userID, 10))
	resp, err := h.Client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body) // keep the connection reusable
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("packet %d, user %d: HTTP %d", packetID, userID, resp.StatusCode)
	}
	return nil
}
