package engine

import (
	"math/rand/v2"
	"time"
)

// Clock tells the time; tests inject a fake one so expiry needs no sleeping.
type Clock interface {
	Now() time.Time
}

// SystemClock is the wall clock.
type SystemClock struct{}

// Now implements Clock.
func (SystemClock) Now() time.Time { return time.Now() }

// Rand is the randomness the split needs. *rand.Rand satisfies it; the zero
// value of GlobalRand uses math/rand/v2's goroutine-safe generator.
type Rand interface {
	Int64N(n int64) int64
	Shuffle(n int, swap func(i, j int))
}

// GlobalRand is math/rand/v2's top-level generator, seeded once by the runtime.
type GlobalRand struct{}

// Int64N implements Rand.
func (GlobalRand) Int64N(n int64) int64 { return rand.Int64N(n) }

// Shuffle implements Rand.
func (GlobalRand) Shuffle(n int, swap func(i, j int)) { rand.Shuffle(n, swap) }
