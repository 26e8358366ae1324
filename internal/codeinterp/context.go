package codeinterp

import (
	"context"
	"log/slog"
	"sort"
	"sync"
	"time"
)

// codeContext is one context: a kernel of one language in one working
// directory, started again when it dies, and a queue that lets one execution
// at a time use it.
type codeContext struct {
	id, language, cwd string
	srv               *Server
	created           time.Time

	queue chan struct{} // one slot, held by the running execution

	mu       sync.Mutex
	k        kernel
	starting chan struct{} // closed when the kernel being started is there
	removed  bool

	// Touched only while holding the queue slot.
	envKernel kernel            // the kernel the global env was set in
	globalEnv map[string]string // the global env set in envKernel
	envWarned bool              // a failure to read it was logged
}

// kernel returns the running kernel, starting one when there is none (at
// first use, after a restart, after a crash).
func (c *codeContext) kernel(ctx context.Context) (kernel, error) {
	for {
		c.mu.Lock()
		if c.removed {
			c.mu.Unlock()
			return nil, errRemoved
		}
		if k := c.k; k != nil {
			select {
			case <-k.done():
				c.k = nil
				c.mu.Unlock()
				k.close(errRestarting) // reap what the dead kernel left
				continue
			default:
				c.mu.Unlock()
				return k, nil
			}
		}
		if wait := c.starting; wait != nil {
			c.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		wait := make(chan struct{})
		c.starting = wait
		c.mu.Unlock()

		// The kernel outlives the request that happens to start it.
		k, err := c.srv.startKernel(context.WithoutCancel(ctx), c.language, c.cwd)
		c.mu.Lock()
		c.starting = nil
		close(wait)
		if err == nil && c.removed {
			c.mu.Unlock()
			k.close(errRemoved)
			return nil, errRemoved
		}
		if err == nil {
			c.k = k
		}
		c.mu.Unlock()
		return k, err
	}
}

// restart replaces the kernel by a new one; an execution in flight ends
// with ContextRestarting.
func (c *codeContext) restart(ctx context.Context) error {
	c.mu.Lock()
	old := c.k
	c.k = nil
	c.mu.Unlock()
	if old != nil {
		old.close(errRestarting)
	}
	_, err := c.kernel(ctx)
	return err
}

// remove kills the kernel for good.
func (c *codeContext) remove() {
	c.mu.Lock()
	c.removed = true
	k := c.k
	c.k = nil
	c.mu.Unlock()
	if k != nil {
		k.close(errRemoved)
	}
}

func (c *codeContext) isRemoved() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.removed
}

// setupTimeout bounds the code setting environment variables.
var setupTimeout = 30 * time.Second

// execute runs one /execute request: it waits for its turn, sets the
// environment, runs code and hands every event to emit, end_of_execution
// last. emit reports false once nobody reads any more. When ctx ends (the
// client went away) before the execution does, the kernel is interrupted.
func (c *codeContext) execute(ctx context.Context, code string, envVars map[string]string, token string, emit func(event) bool) {
	select {
	case c.queue <- struct{}{}:
	case <-ctx.Done():
		return
	}
	defer func() { <-c.queue }()

	fail := func(err error) {
		e := asEndError(err)
		emit(errorEvent(e.name, e.value, ""))
		emit(event{Type: typeEnd})
	}
	k, err := c.kernel(ctx)
	if err != nil {
		if ctx.Err() == nil {
			fail(err)
		}
		return
	}
	if c.envKernel != k {
		c.setGlobalEnv(ctx, k, token)
	}
	if len(envVars) > 0 {
		sctx, cancel := context.WithTimeout(ctx, setupTimeout)
		err := k.setup(sctx, k.setEnvCode(envVars))
		cancel()
		if err != nil {
			c.srv.log.Warn("set env_vars", "context", c.id, "err", err)
			fail(&endError{"EnvVarsError", "Failed to set env_vars: " + err.Error()})
			return
		}
	}

	if ctx.Err() != nil {
		return // the client went away before the code ran
	}
	err = k.execute(ctx, code, func(ev event) { emit(ev) })
	if err != nil {
		e := asEndError(err)
		emit(errorEvent(e.name, e.value, ""))
	}
	emit(event{Type: typeEnd})

	if len(envVars) > 0 && err == nil {
		c.resetEnv(k, envVars)
	}
}

// setGlobalEnv sets the sandbox's global environment (envd's /envs) in a
// kernel that does not have it yet. Failures are logged and retried at the
// next execution.
func (c *codeContext) setGlobalEnv(ctx context.Context, k kernel, token string) {
	envs, err := c.srv.globalEnv(ctx, token)
	if err != nil {
		level := slog.LevelWarn
		if c.envWarned {
			level = slog.LevelDebug
		}
		c.envWarned = true
		c.srv.log.Log(ctx, level, "read the global environment from envd", "context", c.id, "err", err)
		return
	}
	if len(envs) > 0 {
		sctx, cancel := context.WithTimeout(ctx, setupTimeout)
		err = k.setup(sctx, k.setEnvCode(envs))
		cancel()
		if err != nil {
			c.srv.log.Warn("set the global environment", "context", c.id, "err", err)
			return
		}
	}
	c.envKernel, c.globalEnv = k, envs
}

// resetEnv undoes a request's env_vars: back to the global value, or unset.
func (c *codeContext) resetEnv(k kernel, envVars map[string]string) {
	restore := map[string]string{}
	var unset []string
	for key := range envVars {
		if v, ok := c.globalEnv[key]; ok && c.envKernel == k {
			restore[key] = v
		} else {
			unset = append(unset, key)
		}
	}
	sort.Strings(unset)
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	if len(unset) > 0 {
		if err := k.setup(ctx, k.unsetEnvCode(unset)); err != nil {
			c.srv.log.Warn("reset env_vars", "context", c.id, "err", err)
		}
	}
	if len(restore) > 0 {
		if err := k.setup(ctx, k.setEnvCode(restore)); err != nil {
			c.srv.log.Warn("reset env_vars", "context", c.id, "err", err)
		}
	}
}
