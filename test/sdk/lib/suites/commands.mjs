// commands.run: output, exit codes, environment, working directory, users,
// large output, timeouts and streaming callbacks.
import assert from 'node:assert/strict'
import { before, describe, test } from 'node:test'
import { describeError, rejection, sha256, uniq, waitFor } from '../util.mjs'

// Per-test bound: a hung stream fails the test instead of the run.
const T = { timeout: 30_000 }

/** Register the commands.run tests against ctx (see lib/targets). */
export function registerCommandTests(ctx) {
  const { CommandExitError, InvalidArgumentError, TimeoutError } = ctx.sdk
  describe('commands.run', () => {
    let sbx
    before(async () => {
      sbx = await ctx.sandbox()
    })

    test('returns stdout, stderr and exit code 0', T, async () => {
      const r = await sbx.commands.run('echo out; echo err >&2')
      assert.equal(r.exitCode, 0)
      assert.equal(r.stdout, 'out\n')
      assert.equal(r.stderr, 'err\n')
    })

    test('non-zero exit rejects with CommandExitError carrying exitCode and stderr', T, async () => {
      const err = await rejection(sbx.commands.run('echo partial; echo oops >&2; exit 3'), 'commands.run(exit 3)')
      assert.ok(err instanceof CommandExitError, `want CommandExitError, got ${describeError(err)}`)
      assert.equal(err.exitCode, 3)
      assert.equal(err.stderr, 'oops\n')
      assert.equal(err.stdout, 'partial\n')
    })

    test('envs are passed to the command', T, async () => {
      const r = await sbx.commands.run('printf "%s|%s" "$PADDOCK_A" "$PADDOCK_B"', {
        envs: { PADDOCK_A: 'a value with spaces', PADDOCK_B: 'x=y' },
      })
      assert.equal(r.stdout, 'a value with spaces|x=y')
    })

    test('cwd sets the working directory', T, async () => {
      const dir = `${ctx.scratchRoot}/cwd-${uniq()}`
      await sbx.commands.run(`mkdir -p ${dir}`)
      const r = await sbx.commands.run('pwd', { cwd: dir })
      assert.equal(r.stdout.trim(), dir)
    })

    test('a missing cwd is rejected with InvalidArgumentError', T, async () => {
      const err = await rejection(
        sbx.commands.run('pwd', { cwd: `${ctx.scratchRoot}/does-not-exist-${uniq()}` }),
        'commands.run with a missing cwd',
      )
      assert.ok(err instanceof InvalidArgumentError, `want InvalidArgumentError, got ${describeError(err)}`)
    })

    test('no user runs as the default user', T, async () => {
      const r = await sbx.commands.run('whoami')
      assert.equal(r.stdout.trim(), ctx.defaultUser)
    })

    test("user 'root' runs as root", T, async () => {
      const r = await sbx.commands.run('whoami; id -u', { user: 'root' })
      assert.equal(r.stdout, 'root\n0\n')
    })

    test("user 'user' runs as user with HOME, USER and cwd of user", T, async () => {
      const r = await sbx.commands.run('whoami; echo "$HOME"; echo "$USER"; pwd', { user: 'user' })
      assert.equal(r.stdout, `user\n${ctx.userHome}\nuser\n${ctx.userHome}\n`)
    })

    test('4 MiB of output arrives intact', T, async () => {
      // 3 MiB of random bytes, base64 without line breaks: exactly 4 MiB of
      // text. The command reports the hash of what it printed on stderr.
      const cmd =
        'f=$(mktemp) && head -c 3145728 /dev/urandom | base64 -w0 > "$f" && ' +
        'sha256sum < "$f" | cut -d" " -f1 >&2 && cat "$f"; rc=$?; rm -f "$f"; exit $rc'
      const r = await sbx.commands.run(cmd)
      const want = r.stderr.trim()
      assert.match(want, /^[0-9a-f]{64}$/, `stderr should be the sha256: ${r.stderr.slice(0, 200)}`)
      assert.equal(r.stdout.length, 4 * 1024 * 1024)
      assert.equal(sha256(r.stdout), want)
    })

    test('timeoutMs ends the command with a timeout and kills the process', T, async () => {
      const marker = `${Math.floor(Math.random() * 1e9)}`
      // "sleep 30.<marker>" appears in the command line of both bash and sleep.
      // As `user`: killing a login shell of root while it still runs root's
      // dotfiles can leave their locks behind on a debug host (e.g. pyenv's).
      const err = await rejection(
        sbx.commands.run(`sleep 30.${marker}; echo finished`, { timeoutMs: 1000, user: 'user' }),
        'commands.run(sleep 30, timeoutMs 1000)',
      )
      assert.ok(
        err instanceof TimeoutError || (err instanceof CommandExitError && err.exitCode !== 0),
        `want TimeoutError (or a killed CommandExitError), got ${describeError(err)}`,
      )
      // Like `pgrep -af`, without needing procps: scan /proc. The bracket keeps
      // the scanning shell's own command line from matching the pattern.
      const scan =
        `for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < "$f" 2>/dev/null; echo; done | ` +
        `grep -a 'sleep 30[.]${marker}' || true`
      let left = ''
      await waitFor(
        async () => {
          const r = await sbx.commands.run(scan)
          left = r.stdout.trim()
          return left === ''
        },
        { timeoutMs: 5000, what: 'the timed-out process to be gone', describe: () => left },
      )
    })

    test('onStdout and onStderr receive the output in order', T, async () => {
      const seen = []
      const out = []
      const errs = []
      const r = await sbx.commands.run(
        'for i in 1 2 3 4 5; do echo "out$i"; sleep 0.05; echo "err$i" >&2; sleep 0.05; done',
        {
          onStdout: (d) => {
            out.push(d)
            seen.push(['out', d])
          },
          onStderr: (d) => {
            errs.push(d)
            seen.push(['err', d])
          },
        },
      )
      assert.equal(out.join(''), 'out1\nout2\nout3\nout4\nout5\n')
      assert.equal(errs.join(''), 'err1\nerr2\nerr3\nerr4\nerr5\n')
      assert.equal(r.stdout, out.join(''))
      assert.equal(r.stderr, errs.join(''))
      // Lines were 50 ms apart, alternating streams: both streams are
      // delivered live, not one after the other at the end. (Exact
      // interleaving is not asserted: stdout and stderr are separate pipes,
      // and a loaded 2-core CI machine can delay one by more than 50 ms.)
      const lines = seen.flatMap(([, d]) => d.split('\n').filter(Boolean))
      assert.ok(lines.indexOf('out1') < lines.indexOf('err5'), `stdout live: ${lines}`)
      assert.ok(lines.indexOf('err1') < lines.indexOf('out5'), `stderr live: ${lines}`)
    })
  })
}
