package lua

import (
	"context"
	"embed"
	"strings"

	"github.com/redis/go-redis/v9"
)

//go:embed *.lua
var sources embed.FS

// script is a registered script: the .lua files it is made of, in order.
type script struct {
	files []string
	*redis.Script
}

// scripts holds every script of the package, in registration order; each
// registers itself once, at package initialisation (register).
var scripts []*script

// register builds a script from the embedded files, concatenated in order
// (so a library file can precede the script's own), and adds it to scripts.
// It panics on a missing file: the package would not work at all.
func register(files ...string) *redis.Script {
	var b strings.Builder
	for _, f := range files {
		src, err := sources.ReadFile(f)
		if err != nil {
			panic("lua: " + err.Error())
		}
		b.Write(src)
	}
	s := &script{files: files, Script: redis.NewScript(b.String())}
	scripts = append(scripts, s)
	return s.Script
}

// Preload loads every registered script into the script cache, so the first
// grab does not pay for an EVAL fallback, and a pipelined EVALSHA (StockCmd,
// StockOrderCmd) finds its script.
func Preload(ctx context.Context, c redis.Scripter) error {
	for _, s := range scripts {
		if err := s.Load(ctx, c).Err(); err != nil {
			return err
		}
	}
	return nil
}
