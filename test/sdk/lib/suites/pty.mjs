// Pseudo-terminals: create, input, resize, kill.
import assert from 'node:assert/strict'
import { before, describe, test } from 'node:test'
import { describeError, rejection, waitFor } from '../util.mjs'

// Per-test bound: a hung stream fails the test instead of the run.
const T = { timeout: 30_000 }
const enc = (s) => new TextEncoder().encode(s)

/** Collects a PTY's output as text; since(mark) gives what came after a mark. */
function collector() {
  const dec = new TextDecoder()
  let text = ''
  return {
    onData: (bytes) => {
      text += dec.decode(bytes, { stream: true })
    },
    get text() {
      return text
    },
    mark: () => text.length,
    since: (mark) => text.slice(mark),
  }
}

/** Register the PTY tests against ctx (see lib/targets). */
export function registerPtyTests(ctx) {
  const { CommandExitError } = ctx.sdk
  describe('pty', () => {
    let sbx
    before(async () => {
      sbx = await ctx.sandbox()
    })

    test('create, sendInput, resize (stty size) and exit', T, async () => {
      const out = collector()
      const h = await sbx.pty.create({ cols: 80, rows: 24, onData: out.onData })
      try {
        assert.ok(Number.isInteger(h.pid) && h.pid > 0, `pid ${h.pid}`)
        const show = () => JSON.stringify(out.text.slice(-600))

        // The echoed input holds "$((6*7))", only the shell's output holds "42".
        await sbx.pty.sendInput(h.pid, enc('echo "$((6*7))-pty-ok"\n'))
        await waitFor(() => out.text.includes('42-pty-ok'), { what: 'the echo output', describe: show })

        let m = out.mark()
        await sbx.pty.sendInput(h.pid, enc('stty size\n'))
        await waitFor(() => /\b24 80\b/.test(out.since(m)), { what: '"24 80" from stty size', describe: show })

        await sbx.pty.resize(h.pid, { cols: 100, rows: 30 })
        m = out.mark()
        await sbx.pty.sendInput(h.pid, enc('stty size\n'))
        await waitFor(() => /\b30 100\b/.test(out.since(m)), {
          what: '"30 100" from stty size after resize',
          describe: show,
        })

        m = out.mark()
        await sbx.pty.sendInput(h.pid, enc('tty; echo "TERM=$TERM"\n'))
        await waitFor(() => /TERM=xterm-256color/.test(out.since(m)), { what: 'TERM', describe: show })
        assert.match(out.since(m), /\/dev\/pts\/\d+/, 'stdin of the shell is a pts')

        await sbx.pty.sendInput(h.pid, enc('exit\n'))
        const r = await h.wait()
        assert.equal(r.exitCode, 0)
      } finally {
        await sbx.pty.kill(h.pid).catch(() => {})
      }
    })

    test('pty as user runs the shell as that user', T, async () => {
      const out = collector()
      const h = await sbx.pty.create({ cols: 80, rows: 24, user: 'user', onData: out.onData })
      try {
        await sbx.pty.sendInput(h.pid, enc('echo "who=$(whoami)"\n'))
        await waitFor(() => /who=user\b/.test(out.text), {
          what: 'who=user',
          describe: () => JSON.stringify(out.text.slice(-400)),
        })
        await sbx.pty.sendInput(h.pid, enc('exit\n'))
        assert.equal((await h.wait()).exitCode, 0)
      } finally {
        await sbx.pty.kill(h.pid).catch(() => {})
      }
    })

    test('pty.kill returns true, ends the terminal, then false', T, async () => {
      const out = collector()
      // As `user`: see background.mjs on killing root login shells.
      const h = await sbx.pty.create({ cols: 80, rows: 24, user: 'user', onData: out.onData })
      assert.equal(await sbx.pty.kill(h.pid), true)
      const err = await rejection(h.wait(), 'wait() of a killed pty')
      assert.ok(err instanceof CommandExitError, `want CommandExitError, got ${describeError(err)}`)
      assert.notEqual(err.exitCode, 0)
      await waitFor(async () => (await sbx.pty.kill(h.pid)) === false, {
        timeoutMs: 5000,
        what: 'pty.kill of the ended terminal to return false',
      })
    })
  })
}
