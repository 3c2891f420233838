package http

import (
	"net/http/pprof"

	"github.com/gin-gonic/gin"
	"github.com/grab-engine/grab/engine/errs"
)

// profile serves the runtime's profiles under /v1/admin/debug/pprof/{name},
// behind the admin token: "profile" is a CPU profile over ?seconds= (30 by
// default), "trace" an execution trace, any other name a runtime/pprof
// profile (heap, allocs, goroutine, mutex, block, ...); NOT_FOUND for a
// name the runtime does not know.
func (s *server) profile(c *gin.Context) {
	name := c.Param("name")
	switch name {
	case "profile":
		pprof.Profile(c.Writer, c.Request)
	case "trace":
		pprof.Trace(c.Writer, c.Request)
	default:
		if !knownProfile(name) {
			s.fail(c, errs.Errorf(errs.CodeNotFound, "no such profile"))
			return
		}
		pprof.Handler(name).ServeHTTP(c.Writer, c.Request)
	}
}

func knownProfile(name string) bool {
	switch name {
	case "heap", "allocs", "goroutine", "mutex", "block", "threadcreate":
		return true
	}
	return false
}
