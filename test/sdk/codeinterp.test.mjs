// The code-interpreter suite (issue 6): the official @e2b/code-interpreter
// SDK (npm, pinned 2.8.0) unchanged against the built-in
// `code-interpreter-v1` template of a real `paddock serve` this file starts
// itself (own data dir, port, bridge and subnet; everything is removed and
// the host checked afterwards). The template is built by the server in the
// background (from the machine cache in seconds, else with apt in minutes);
// the suite waits for GET /health to report it.
//
// Also measures (never asserts) create → first runCode latency and the
// runCode('1') round trip; the numbers go to the test output and to
// test/sdk/.out/codeinterp-latency.json.
//
// Run as root: PADDOCK_BIN=bin/paddock node --test test/sdk/codeinterp.test.mjs
import assert from 'node:assert/strict'
import { writeFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { after, before, describe, test } from 'node:test'
import { NotFoundError, Sandbox, TimeoutError } from '@e2b/code-interpreter'
import { hostTraces, killAllSandboxes, serveFixture, stopServe, teardownNetwork } from './lib/serve-host.mjs'
import { rejection, sleep } from './lib/util.mjs'

const here = dirname(fileURLToPath(import.meta.url))
const bin = resolve(process.env.PADDOCK_BIN || join(here, '../../bin/paddock'))
const outDir = process.env.PADDOCK_SDK_OUT || join(here, '.out')
const T = { timeout: 300_000 }
// A fresh machine builds the template with apt (minutes); a cached one extracts it.
const TEMPLATE_WAIT_MS = Number(process.env.PADDOCK_CODEINTERP_BUILD_TIMEOUT_MS || 30 * 60_000)

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

/** Asserts an execution ended without error, showing the error otherwise. */
function noError(ex, what) {
  assert.equal(ex.error, undefined, `${what}: unexpected error ${JSON.stringify(ex.error)}`)
}

describe('@e2b/code-interpreter 2.8.0 against code-interpreter-v1 (paddock serve)', () => {
  const fx = serveFixture({ bin, name: 'ci', bridgePrefix: 'pdci', seed: 6006, logFile: join(outDir, 'codeinterp-serve.log') })
  const bridge = fx.bridge
  let dataDir
  let server
  let key
  const ids = []
  const measured = {}
  let sbx // the sandbox most tests share

  const opts = (extra = {}) => ({ apiKey: key, apiUrl: server.url, sandboxUrl: server.url, timeoutMs: 600_000, ...extra })
  const create = async (extra = {}) => {
    const s = await Sandbox.create(opts(extra))
    ids.push(s.sandboxId)
    return s
  }
  const health = async () => (await (await fetch(`${server.url}/health`)).json()).checks ?? {}

  before(async () => {
    ;({ dataDir, server, key } = await fx.start())
  })

  after(() => fx.stop(ids))

  test('the server builds code-interpreter-v1 in the background and /health reports it ready', { timeout: TEMPLATE_WAIT_MS + 60_000 }, async (t) => {
    const t0 = Date.now()
    let state
    for (;;) {
      state = (await health()).codeInterpreterTemplate
      if (state !== 'building') break
      assert.ok(Date.now() - t0 < TEMPLATE_WAIT_MS, `code-interpreter-v1 still building after ${TEMPLATE_WAIT_MS} ms`)
      await sleep(500)
    }
    assert.equal(state, 'ready', `code-interpreter-v1: ${state}\n${server.stderr().slice(-4000)}`)
    t.diagnostic(`code-interpreter-v1 ready ${Date.now() - t0} ms after the server answered /health`)
    // Its name is reserved: a team cannot build a template called so.
    const res = await fetch(`${server.url}/v3/templates`, {
      method: 'POST',
      headers: { 'X-API-Key': key, 'Content-Type': 'application/json' },
      body: JSON.stringify({ name: 'code-interpreter-v1' }),
    })
    const body = await res.text()
    assert.equal(res.status, 409, body)
    assert.match(body, /built-in template/)
  })

  test('Sandbox.create() uses code-interpreter-v1; runCode("print(1)") prints 1 as the first execution', T, async () => {
    sbx = await create()
    const info = await sbx.getInfo()
    assert.equal(info.name, 'code-interpreter-v1')
    const ex = await sbx.runCode('print(1)')
    noError(ex, 'print(1)')
    assert.deepEqual(ex.logs.stdout, ['1\n'])
    assert.deepEqual(ex.logs.stderr, [])
    assert.deepEqual(ex.results, [])
    // The ready check made the kernel warm without running code in it.
    assert.equal(ex.executionCount, 1)
  })

  test('state persists: x = 41, then x + 1 is 42', T, async () => {
    noError(await sbx.runCode('x = 41'), 'x = 41')
    const ex = await sbx.runCode('x + 1')
    noError(ex, 'x + 1')
    assert.equal(ex.text, '42')
    assert.equal(ex.results.length, 1)
    assert.equal(ex.results[0].isMainResult, true)
  })

  test('1/0 gives ZeroDivisionError with its traceback', T, async () => {
    const ex = await sbx.runCode('1/0')
    assert.ok(ex.error, 'an error')
    assert.equal(ex.error.name, 'ZeroDivisionError')
    assert.equal(ex.error.value, 'division by zero')
    assert.match(ex.error.traceback, /ZeroDivisionError/)
    assert.match(ex.error.traceback, /1\/0/)
    // The context is still usable and kept its state.
    assert.equal((await sbx.runCode('x')).text, '41')
  })

  test('a matplotlib plot gives a PNG result', T, async () => {
    const ex = await sbx.runCode(`
import matplotlib.pyplot as plt
plt.figure(figsize=(3, 2))
plt.plot([1, 2, 3], [1, 4, 9])
plt.title('squares')
plt.show()
`)
    noError(ex, 'plot')
    const pngs = ex.results.filter((r) => r.png)
    assert.equal(pngs.length, 1, `results: ${JSON.stringify(ex.results.map((r) => r.formats()))}`)
    const png = Buffer.from(pngs[0].png, 'base64')
    assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], 'PNG signature')
    assert.ok(png.length > 1000, `a real image (${png.length} bytes)`)
    assert.equal(pngs[0].isMainResult, false)
  })

  test('a pandas DataFrame gives an HTML result (and text)', T, async () => {
    const ex = await sbx.runCode(`
import pandas as pd
pd.DataFrame({'name': ['a', 'b'], 'value': [1, 2]})
`)
    noError(ex, 'DataFrame')
    const main = ex.results.find((r) => r.isMainResult)
    assert.ok(main, 'a main result')
    assert.match(main.html, /<table[^>]*class="dataframe"/)
    assert.match(main.html, /<td>a<\/td>/)
    assert.match(main.text, /name\s+value/)
  })

  test('onStdout streams each line while the code runs, in order', T, async () => {
    const seen = []
    const t0 = Date.now()
    const ex = await sbx.runCode(
      `
import time
for i in range(4):
    print(f"tick {i}", flush=True)
    time.sleep(0.4)
`,
      { onStdout: (m) => seen.push({ line: m.line, at: Date.now(), error: m.error }) },
    )
    const done = Date.now()
    noError(ex, 'loop')
    assert.deepEqual(seen.map((s) => s.line), ['tick 0\n', 'tick 1\n', 'tick 2\n', 'tick 3\n'])
    assert.deepEqual(ex.logs.stdout, ['tick 0\n', 'tick 1\n', 'tick 2\n', 'tick 3\n'])
    assert.ok(seen.every((s) => s.error === false))
    // Streamed, not buffered to the end: the first line arrived at least
    // three sleeps (1.2 s) before the execution finished, and the lines
    // arrived apart (each is followed by a 0.4 s sleep).
    assert.ok(done - seen[0].at >= 1000, `first line ${seen[0].at - t0} ms after the start, execution done after ${done - t0} ms`)
    for (let i = 1; i < seen.length; i++) {
      assert.ok(seen[i].at - seen[i - 1].at >= 250, `line ${i} arrived ${seen[i].at - seen[i - 1].at} ms after line ${i - 1}`)
    }
  })

  describe('contexts', () => {
    let ctx

    test('createCodeContext({cwd}) keeps its own working directory and state', T, async () => {
      await sbx.commands.run('mkdir -p /home/user/work && echo data > /home/user/work/in.txt')
      ctx = await sbx.createCodeContext({ cwd: '/home/user/work', language: 'python' })
      assert.match(ctx.id, /\S+/)
      assert.equal(ctx.language, 'python')
      assert.equal(ctx.cwd, '/home/user/work')
      const cwd = await sbx.runCode('import os\nos.getcwd()', { context: ctx })
      noError(cwd, 'getcwd')
      assert.equal(cwd.text, '/home/user/work')
      const read = await sbx.runCode("open('in.txt').read().strip()", { context: ctx })
      assert.equal(read.text, 'data')
      noError(await sbx.runCode('y = "in ctx"', { context: ctx }), 'y =')
      assert.equal((await sbx.runCode('y', { context: ctx })).text, 'in ctx')
      // Its own state: the default context has x and no y; ctx has y and no x.
      assert.equal((await sbx.runCode('y')).error?.name, 'NameError')
      assert.equal((await sbx.runCode('x', { context: ctx })).error?.name, 'NameError')
      assert.equal((await sbx.runCode('x')).text, '41')
      // The default context still works in /home/user.
      assert.equal((await sbx.runCode('import os\nos.getcwd()')).text, '/home/user')
    })

    test('listCodeContexts lists the default context and the new one', T, async () => {
      const list = await sbx.listCodeContexts()
      const mine = list.find((c) => c.id === ctx.id)
      assert.ok(mine, `listed: ${JSON.stringify(list)}`)
      assert.equal(mine.cwd, '/home/user/work')
      assert.ok(list.some((c) => c.language === 'python' && c.cwd === '/home/user' && c.id !== ctx.id), `default python context listed: ${JSON.stringify(list)}`)
      assert.equal(new Set(list.map((c) => c.id)).size, list.length, 'no context listed twice')
    })

    test('timeoutMs interrupts `while True: pass`; the next call in the same context works and kept its state', T, async () => {
      noError(await sbx.runCode('kept = 7', { context: ctx }), 'kept =')
      const t0 = Date.now()
      const err = await rejection(sbx.runCode('while True:\n    pass', { context: ctx, timeoutMs: 2000 }))
      const ms = Date.now() - t0
      assert.ok(err instanceof TimeoutError, `TimeoutError, got ${err?.name}: ${err?.message}`)
      assert.ok(ms < 30_000, `gave up after ${ms} ms`)
      const next = await sbx.runCode('kept * 6', { context: ctx, timeoutMs: 30_000 })
      noError(next, 'after the timeout')
      assert.equal(next.text, '42')
    })

    test('restartCodeContext clears its state and keeps its cwd', T, async () => {
      await sbx.restartCodeContext(ctx)
      const ex = await sbx.runCode('y', { context: ctx })
      assert.equal(ex.error?.name, 'NameError')
      assert.equal((await sbx.runCode('import os\nos.getcwd()', { context: ctx })).text, '/home/user/work')
      // Restarting one context leaves the others alone.
      assert.equal((await sbx.runCode('x')).text, '41')
    })

    test('removeCodeContext deletes it: no longer listed, runCode in it is NotFound', T, async () => {
      await sbx.removeCodeContext(ctx.id)
      const list = await sbx.listCodeContexts()
      assert.ok(!list.some((c) => c.id === ctx.id), `still listed: ${JSON.stringify(list)}`)
      const err = await rejection(sbx.runCode('1', { context: ctx }))
      assert.ok(err instanceof NotFoundError, `NotFoundError, got ${err?.name}: ${err?.message}`)
      assert.match(err.message, new RegExp(ctx.id))
      const again = await rejection(sbx.removeCodeContext(ctx.id))
      assert.ok(again instanceof NotFoundError, `removing twice: NotFoundError, got ${again?.name}`)
    })
  })

  test('a JavaScript context keeps a variable between calls; TypeScript runs too', T, async () => {
    noError(await sbx.runCode('let counter = 40\nconst greet = (n) => `hi ${n}`', { language: 'javascript' }), 'let')
    noError(await sbx.runCode('counter += 1', { language: 'js' }), 'counter += 1')
    const ex = await sbx.runCode('console.log(greet("js")); counter + 1', { language: 'javascript' })
    noError(ex, 'counter + 1')
    assert.equal(ex.text, '42')
    assert.deepEqual(ex.logs.stdout, ['hi js\n'])
    const err = await sbx.runCode('undefinedThing.x', { language: 'javascript' })
    assert.equal(err.error?.name, 'ReferenceError')
    const ts = await sbx.runCode('const n: number = 41\nn + 1', { language: 'typescript' })
    noError(ts, 'typescript')
    assert.equal(ts.text, '42')
  })

  test('a bash context keeps variables and its cwd; a failing command is an error', T, async () => {
    const a = await sbx.runCode('cd /tmp && X=hello && echo start', { language: 'bash' })
    noError(a, 'bash 1')
    assert.deepEqual(a.logs.stdout, ['start\n'])
    const b = await sbx.runCode('echo "$X from $(pwd)"', { language: 'bash' })
    noError(b, 'bash 2')
    assert.deepEqual(b.logs.stdout, ['hello from /tmp\n'])
    const c = await sbx.runCode('ls /nonexistent-dir', { language: 'bash' })
    assert.ok(c.error, 'a failing command is an error')
    assert.match(c.logs.stderr.join(''), /nonexistent-dir/)
  })

  test('envs apply to one runCode; the sandbox envs reach every context', T, async () => {
    const s = await create({ envs: { SANDBOX_LEVEL: 'from-create' } })
    try {
      const code = 'import os\n(os.environ.get("PER_RUN"), os.environ.get("SANDBOX_LEVEL"))'
      const withEnv = await s.runCode(code, { envs: { PER_RUN: 'only-now', SANDBOX_LEVEL: 'overridden' } })
      noError(withEnv, 'with envs')
      assert.equal(withEnv.text, "('only-now', 'overridden')")
      const without = await s.runCode(code)
      noError(without, 'without envs')
      assert.equal(without.text, "(None, 'from-create')")
      const js = await s.runCode('[process.env.PER_RUN, process.env.SANDBOX_LEVEL].join(",")', { language: 'js', envs: { PER_RUN: 'js-run' } })
      assert.equal(js.text, 'js-run,from-create')
      const sh = await s.runCode('echo "$PER_RUN,$SANDBOX_LEVEL"', { language: 'bash', envs: { PER_RUN: 'sh-run' } })
      assert.deepEqual(sh.logs.stdout, ['sh-run,from-create\n'])
    } finally {
      await s.kill()
    }
  })

  test('two sandboxes from the template do not share state, files or kernels', T, async () => {
    const other = await create()
    try {
      const ex = await other.runCode('x')
      assert.equal(ex.error?.name, 'NameError', 'the other sandbox has no x')
      assert.equal((await other.runCode('print(1)')).executionCount, 2, 'its own execution counter')
      noError(await sbx.runCode("open('/home/user/only-here.txt', 'w').write('mine')"), 'write')
      const seen = await other.runCode("import os\nos.path.exists('/home/user/only-here.txt')")
      assert.equal(seen.text, 'False')
      const pids = await Promise.all([sbx, other].map(async (s) => (await s.runCode('import os\nos.getpid()')).text))
      assert.ok(pids.every((p) => /^\d+$/.test(p)))
      assert.equal((await sbx.runCode('x')).text, '41', 'the first sandbox kept its state')
    } finally {
      await other.kill()
    }
  })

  test('measure: create → first runCode, and the runCode("1") round trip (not asserted)', { timeout: 600_000 }, async (t) => {
    const firstRun = []
    const createOnly = []
    for (let i = 0; i < 10; i++) {
      const t0 = performance.now()
      const s = await create()
      const t1 = performance.now()
      const ex = await s.runCode('1')
      const t2 = performance.now()
      noError(ex, 'runCode(1)')
      assert.equal(ex.text, '1')
      createOnly.push(t1 - t0)
      firstRun.push(t2 - t0)
      await s.kill()
    }
    const rtt = []
    for (let i = 0; i < 3; i++) await sbx.runCode('1') // warm the connection
    for (let i = 0; i < 30; i++) {
      const t0 = performance.now()
      const ex = await sbx.runCode('1')
      rtt.push(performance.now() - t0)
      assert.equal(ex.text, '1')
    }
    Object.assign(measured, {
      createToFirstRunCodeMsP50: Math.round(median(firstRun)),
      createMsP50: Math.round(median(createOnly)),
      runCodeRoundTripMsP50: Math.round(median(rtt) * 10) / 10,
      createToFirstRunCodeMs: firstRun.map(Math.round),
      runCodeRoundTripMs: rtt.map((x) => Math.round(x * 10) / 10),
    })
    writeFileSync(join(outDir, 'codeinterp-latency.json'), `${JSON.stringify(measured, null, 2)}\n`)
    t.diagnostic(
      `create → first runCode p50 ${measured.createToFirstRunCodeMsP50} ms (create alone p50 ${measured.createMsP50} ms, 10 runs); runCode('1') round trip p50 ${measured.runCodeRoundTripMsP50} ms (30 runs)`,
    )
  })

  test('after kill and stop, nothing is left on the host', T, async () => {
    await killAllSandboxes(server.url, key, ids)
    await stopServe(server)
    assert.deepEqual(hostTraces({ dataDir, bridge, ids }), [])
    teardownNetwork(bridge)
  })
})
