// Background commands: handles, list, stdin, kill and re-attaching.
import assert from 'node:assert/strict'
import { before, describe, test } from 'node:test'
import { describeError, rejection, waitFor } from '../util.mjs'

// Per-test bound: a hung stream fails the test instead of the run.
const T = { timeout: 30_000 }

/** A pid no kernel hands out (above any pid_max), so never one envd started. */
const BOGUS_PID = 2 ** 31 - 1

// Commands that get killed run as `user`: killing a login shell of root while it
// still runs root's dotfiles can leave their locks behind on a debug host.
const U = { user: 'user' }

/** Register the background-command tests against ctx (see lib/targets). */
export function registerBackgroundTests(ctx) {
  const { CommandExitError } = ctx.sdk
  describe('commands (background)', () => {
    let sbx
    before(async () => {
      sbx = await ctx.sandbox()
    })

    test('background run returns a handle with a pid, listed by commands.list', T, async () => {
      const cmd = 'sleep 20; echo never'
      const h = await sbx.commands.run(cmd, { background: true, ...U })
      try {
        assert.ok(Number.isInteger(h.pid) && h.pid > 0, `pid ${h.pid}`)
        assert.equal(h.exitCode, undefined, 'a running command has no exit code yet')
        const list = await sbx.commands.list()
        const p = list.find((x) => x.pid === h.pid)
        assert.ok(p, `pid ${h.pid} not in commands.list(): ${JSON.stringify(list)}`)
        assert.equal(p.cmd, '/bin/bash')
        assert.deepEqual(p.args, ['-l', '-c', cmd])
        assert.equal(p.tag, undefined)
        assert.equal(typeof p.envs, 'object')
      } finally {
        await sbx.commands.kill(h.pid).catch(() => {})
      }
    })

    test('sendStdin and closeStdin feed a stdin:true process', T, async () => {
      const h = await sbx.commands.run('cat; echo "[eof]"', { background: true, stdin: true, ...U })
      try {
        await sbx.commands.sendStdin(h.pid, 'hello\n')
        await h.sendStdin(new TextEncoder().encode('wörld\n'))
        await sbx.commands.closeStdin(h.pid)
        const r = await h.wait()
        assert.equal(r.exitCode, 0)
        assert.equal(r.stdout, 'hello\nwörld\n[eof]\n')
      } finally {
        await sbx.commands.kill(h.pid).catch(() => {})
      }
    })

    test('without stdin:true the command reads EOF at once', T, async () => {
      const r = await sbx.commands.run('cat; echo "[eof]"', { timeoutMs: 10_000 })
      assert.equal(r.stdout, '[eof]\n')
    })

    test('commands.kill returns true, ends the process, then false', T, async () => {
      const h = await sbx.commands.run('sleep 30', { background: true, ...U })
      assert.equal(await sbx.commands.kill(h.pid), true)
      const err = await rejection(h.wait(), 'wait() of a killed command')
      assert.ok(err instanceof CommandExitError, `want CommandExitError, got ${describeError(err)}`)
      assert.notEqual(err.exitCode, 0)
      let list = []
      await waitFor(
        async () => {
          list = await sbx.commands.list()
          return !list.some((p) => p.pid === h.pid)
        },
        { timeoutMs: 5000, what: `pid ${h.pid} to leave commands.list()`, describe: () => JSON.stringify(list) },
      )
      assert.equal(await sbx.commands.kill(h.pid), false, 'kill of an exited pid')
    })

    test('commands.kill of an unknown pid returns false', T, async () => {
      assert.equal(await sbx.commands.kill(BOGUS_PID), false)
    })

    test('commands.connect re-attaches and receives later output and the exit code', T, async () => {
      const first = []
      const h = await sbx.commands.run('echo first; read x; echo "second-$x"; echo "to-err" >&2; exit 7', {
        background: true,
        stdin: true,
        ...U,
        onStdout: (d) => first.push(d),
      })
      try {
        await waitFor(() => first.join('').includes('first\n'), {
          what: 'the first line',
          describe: () => JSON.stringify(first.join('')),
        })
        await h.disconnect()

        const later = []
        const laterErr = []
        const h2 = await sbx.commands.connect(h.pid, {
          onStdout: (d) => later.push(d),
          onStderr: (d) => laterErr.push(d),
        })
        assert.equal(h2.pid, h.pid)
        await sbx.commands.sendStdin(h.pid, 'abc\n')
        const err = await rejection(h2.wait(), 'wait() after connect (exit 7)')
        assert.ok(err instanceof CommandExitError, `want CommandExitError, got ${describeError(err)}`)
        assert.equal(err.exitCode, 7)
        assert.ok(later.join('').includes('second-abc\n'), `connected stdout: ${JSON.stringify(later.join(''))}`)
        assert.ok(err.stdout.includes('second-abc\n'), `result stdout: ${JSON.stringify(err.stdout)}`)
        assert.equal(laterErr.join(''), 'to-err\n')
        assert.ok(!first.join('').includes('second'), 'the disconnected handle kept receiving output')
      } finally {
        await sbx.commands.kill(h.pid).catch(() => {})
      }
    })
  })
}
