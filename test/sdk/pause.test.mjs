// Pause, resume, auto-pause, auto-resume and snapshots with memory kept
// (issue 7), driven by the official SDK (e2b 2.51) against a real
// `paddock serve` this test starts itself (own data dir, port, bridge and
// subnet), restarts in the middle, and checks the host after.
//
// Also measures (never asserts) pause and resume latency for an idle
// sandbox and for one holding 256 MiB; the numbers go to the test output
// and to test/sdk/.out/pause-latency.json.
//
// Needs root and CRIU >= 4.2 (scripts/install-criu.sh); run.sh pause runs it.
import assert from 'node:assert/strict'
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { after, before, describe, test } from 'node:test'
import * as sdk from 'e2b'
import { CGROUP_PARENT, hostTraces, killAllSandboxes, serveFixture, stopServe, teardownNetwork } from './lib/serve-host.mjs'
import { describeError, rejection, sleep, waitFor } from './lib/util.mjs'

const { Sandbox } = sdk
const here = dirname(fileURLToPath(import.meta.url))
const bin = resolve(process.env.PADDOCK_BIN || join(here, '../../bin/paddock'))
const T = { timeout: 300_000 }

// A Python process counting in memory, writing the count every 100 ms.
const COUNTER = (path) =>
  `python3 -c "
import os, time
i = 0
while True:
    i += 1
    with open('${path}.tmp', 'w') as f:
        f.write(str(i))
    os.replace('${path}.tmp', '${path}')
    time.sleep(0.1)
"`

// A tiny HTTP server holding state in memory: every GET counts a hit.
const HIT_SERVER = (port) =>
  `python3 -c "
import http.server, json, os, time
hits = 0
started = time.time()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global hits
        hits += 1
        body = json.dumps({'hits': hits, 'pid': os.getpid(), 'started': started}).encode()
        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(('0.0.0.0', ${port}), H).serve_forever()
"`

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

/** CPU time (ns) of a sandbox's cgroup, or null when the cgroup is gone. */
function cpuUsage(id) {
  const p = `/sys/fs/cgroup/cpuacct/${CGROUP_PARENT}/${id}/cpuacct.usage`
  try {
    return Number(readFileSync(p, 'utf8'))
  } catch {
    return null
  }
}

/** PIDs of host processes in a sandbox's cgroups. */
function processesOf(id) {
  const want = `/${CGROUP_PARENT}/${id}`
  const out = []
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      if (readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n').some((l) => l.endsWith(want) || l.includes(`${want}/`))) out.push(pid)
    } catch {}
  }
  return out
}

const cgroupGone = (id) => !existsSync(`/sys/fs/cgroup/memory/${CGROUP_PARENT}/${id}`)

describe('pause, resume and snapshots with memory (paddock serve)', () => {
  const fx = serveFixture({ bin, name: 'pause', bridgePrefix: 'pdsp', seed: 7001, logFile: join(here, '.out', 'pause-serve.log') })
  const bridge = fx.bridge
  let dataDir
  let server
  let key
  const ids = []
  const measured = {}

  const opts = (extra = {}) => ({ apiKey: key, apiUrl: server.url, sandboxUrl: server.url, ...extra })
  const create = async (template, extra = {}) => {
    const sbx = template ? await Sandbox.create(template, opts(extra)) : await Sandbox.create(opts(extra))
    ids.push(sbx.sandboxId)
    return sbx
  }
  const readCounter = async (sbx, path = '/tmp/counter') => Number(await sbx.files.read(path))
  const waitCounter = (sbx, min, path) =>
    waitFor(async () => (await readCounter(sbx, path).catch(() => 0)) >= min, { timeoutMs: 30_000, what: `counter ${path} >= ${min}` })
  /** A plain HTTP request through the proxy to a port of a sandbox. */
  const viaProxy = async (id, port) => {
    const res = await fetch(server.url, { headers: { 'E2b-Sandbox-Id': id, 'E2b-Sandbox-Port': String(port) } })
    const text = await res.text()
    assert.equal(res.status, 200, `GET through the proxy to ${id}:${port}: ${res.status} ${text}`)
    return JSON.parse(text)
  }
  const restart = async () => {
    server = await fx.restart() // serve must stop cleanly
  }
  const health = async () => (await (await fetch(`${server.url}/health`)).json()).checks ?? {}

  before(async () => {
    ;({ dataDir, server, key } = await fx.start())
  })

  after(async () => {
    try {
      await fx.stop(ids)
    } finally {
      if (Object.keys(measured).length) {
        mkdirSync(join(here, '.out'), { recursive: true })
        writeFileSync(join(here, '.out', 'pause-latency.json'), JSON.stringify(measured, null, 2) + '\n')
      }
    }
  })

  test('the start-up self-test finds memory snapshots available (log line and /health)', T, async () => {
    await waitFor(async () => (await health()).memorySnapshots !== 'checking', { timeoutMs: 120_000, what: 'the self-test' })
    const checks = await health()
    assert.equal(checks.memorySnapshots, 'available', `GET /health checks: ${JSON.stringify(checks)}`)
    assert.match(server.stderr(), /memory snapshots available/)
  })

  test('pause keeps a running counter through a restart of paddock serve; connect resumes it', T, async (t) => {
    const sbx = await create(undefined, { timeoutMs: 600_000 })
    const id = sbx.sandboxId
    await sbx.files.write('/home/user/keep.txt', 'kept across the pause')
    const proc = await sbx.commands.run(COUNTER('/tmp/counter'), { background: true })
    await waitCounter(sbx, 10)

    const before = await readCounter(sbx)
    assert.equal(await sbx.pause(), true, 'pause')
    const listed = await Sandbox.list(opts({ query: { state: ['paused'] } })).nextItems()
    assert.ok(listed.some((s) => s.sandboxId === id && s.state === 'paused'), `listed as paused: ${JSON.stringify(listed)}`)
    assert.equal((await Sandbox.getInfo(id, opts())).state, 'paused')

    // It stops at once (frozen: the counter, seen on the host, stands
    // still), and once its memory is on disk it has no process, cgroup or
    // memory left: it cannot use CPU.
    const counterOnHost = join(dataDir, 'runtime', 'sandboxes', id, 'upper', 'tmp', 'counter')
    const h1 = readFileSync(counterOnHost, 'utf8')
    await sleep(500)
    assert.equal(readFileSync(counterOnHost, 'utf8'), h1, 'the counter moved while paused')
    await waitFor(() => cgroupGone(id), { timeoutMs: 60_000, what: `the cgroup of ${id} to go (memory released)` })
    assert.equal(cpuUsage(id), null, 'no CPU accounting left: nothing runs')
    assert.deepEqual(processesOf(id), [], 'no process of the sandbox left')
    assert.equal(await sbx.pause(), false, 'a second pause says already paused (409)')

    await restart()
    const after = await Sandbox.list(opts({ query: { state: ['paused'] } })).nextItems()
    assert.ok(after.some((s) => s.sandboxId === id && s.state === 'paused'), `still paused after the restart: ${JSON.stringify(after)}`)

    const back = await Sandbox.connect(id, opts({ timeoutMs: 600_000 }))
    assert.equal(back.sandboxId, id)
    assert.equal((await Sandbox.getInfo(id, opts())).state, 'running')
    assert.equal(await back.files.read('/home/user/keep.txt'), 'kept across the pause')
    const c1 = await readCounter(back)
    assert.ok(c1 >= before && c1 < before + 50, `counter at ${c1} after resume, ${before} before the pause: it must continue, not restart`)
    await waitCounter(back, c1 + 5)
    const procs = await back.commands.list()
    assert.ok(procs.some((p) => p.pid === proc.pid), `the counter process (pid ${proc.pid}) is still listed: ${JSON.stringify(procs)}`)
    t.diagnostic(`counter ${before} before the pause, ${c1} right after the resume`)
    assert.equal(await back.kill(), true)
  })

  test('keepMemory false pauses files only, onResume reboot boots afresh: files kept, processes gone, envd initialised', T, async () => {
    const sbx = await create(undefined, { timeoutMs: 600_000 })
    const id = sbx.sandboxId
    await sbx.files.write('/home/user/f.txt', 'files only')
    const counterOnHost = join(dataDir, 'runtime', 'sandboxes', id, 'upper', 'tmp', 'counter')
    for (const how of ['keepMemory false', 'onResume reboot']) {
      const proc = await sbx.commands.run(COUNTER('/tmp/counter'), { background: true })
      await waitCounter(sbx, Number(await sbx.files.read('/tmp/counter').catch(() => 0)) + 5)
      if (how === 'keepMemory false') {
        assert.equal(await sbx.pause({ keepMemory: false }), true)
      } else {
        assert.equal(await sbx.pause(), true)
      }
      await waitFor(() => cgroupGone(id), { timeoutMs: 60_000, what: `${how}: saved` })
      const back = await Sandbox.connect(id, opts(how === 'onResume reboot' ? { onResume: 'reboot' } : {}))
      assert.equal(await back.files.read('/home/user/f.txt'), 'files only', `${how}: files kept`)
      const c = readFileSync(counterOnHost, 'utf8')
      await sleep(500)
      assert.equal(readFileSync(counterOnHost, 'utf8'), c, `${how}: the counter process is gone`)
      const procs = await back.commands.list()
      assert.ok(!procs.some((p) => p.pid === proc.pid), `${how}: no process kept: ${JSON.stringify(procs)}`)
      const r = await back.commands.run('echo "$E2B_SANDBOX_ID"')
      assert.equal(r.stdout.trim(), id, `${how}: envd initialised again`)
    }
    assert.equal(await sbx.kill(), true)
  })

  test('auto-pause at a 3 s timeout, then auto-resume through the proxy with in-memory state', T, async (t) => {
    const sbx = await create(undefined, { timeoutMs: 3_000, lifecycle: { onTimeout: 'pause', autoResume: true } })
    const id = sbx.sandboxId
    // Stop listening to the server's output: a stream the pause cuts makes
    // the SDK probe envd's /health through the proxy, which auto-resumes the
    // sandbox as soon as its save ends, before this test's own requests.
    const hitServer = await sbx.commands.run(HIT_SERVER(8080), { background: true })
    await hitServer.disconnect()
    let first
    await waitFor(
      async () => {
        try {
          first = await viaProxy(id, 8080)
          return true
        } catch {
          return false
        }
      },
      { timeoutMs: 20_000, what: 'the HTTP server in the sandbox' },
    )
    const info = await Sandbox.getInfo(id, opts())
    assert.equal(info.lifecycle?.onTimeout, 'pause')
    await waitFor(async () => (await Sandbox.getInfo(id, opts())).state === 'paused', { timeoutMs: 30_000, what: 'the auto-pause' })
    await waitFor(() => cgroupGone(id), { timeoutMs: 60_000, what: 'the auto-paused sandbox saved' })

    // Concurrent first requests: one resumes, the others wait for it.
    const t0 = performance.now()
    const got = await Promise.all([viaProxy(id, 8080), viaProxy(id, 8080), viaProxy(id, 8080)])
    t.diagnostic(`auto-resume through the proxy: ${(performance.now() - t0).toFixed(0)} ms for 3 concurrent requests`)
    for (const g of got) {
      assert.equal(g.pid, first.pid, 'the same server process')
      assert.equal(g.started, first.started, 'the same server start')
    }
    assert.deepEqual(got.map((g) => g.hits).sort((a, b) => a - b), [first.hits + 1, first.hits + 2, first.hits + 3], 'hits counted on from before the pause')
    assert.equal((await Sandbox.getInfo(id, opts())).state, 'running')
    await Sandbox.kill(id, opts())
  })

  test('a snapshot gives 3 sandboxes with its files and running processes, independent from then on', T, async (t) => {
    const src = await create(undefined, { timeoutMs: 600_000 })
    await src.files.write('/home/user/snap.txt', 'from the snapshot')
    const proc = await src.commands.run(COUNTER('/tmp/counter'), { background: true })
    await waitCounter(src, 10)
    const t0 = performance.now()
    const snap = await src.createSnapshot()
    t.diagnostic(`createSnapshot: ${(performance.now() - t0).toFixed(0)} ms`)
    const atSnap = await readCounter(src)
    assert.ok(snap.snapshotId && snap.names.length === 1, JSON.stringify(snap))
    // The source goes on.
    await waitCounter(src, atSnap + 5)
    const listed = await Sandbox.listSnapshots(opts({ sandboxId: src.sandboxId })).nextItems()
    assert.deepEqual(listed.map((s) => s.snapshotId), [snap.snapshotId])

    const forks = []
    for (let i = 0; i < 3; i++) forks.push(await create(snap.snapshotId, { timeoutMs: 600_000 }))
    assert.equal(new Set([src.sandboxId, ...forks.map((f) => f.sandboxId)]).size, 4, 'each has its own ID')
    for (const f of forks) {
      assert.equal(await f.files.read('/home/user/snap.txt'), 'from the snapshot')
      const c = await readCounter(f)
      assert.ok(c >= atSnap - 20 && c < atSnap + 100, `fork ${f.sandboxId}: counter ${c}, snapshot taken at about ${atSnap}`)
      await waitCounter(f, c + 5)
      const procs = await f.commands.list()
      assert.ok(procs.some((p) => p.pid === proc.pid), `fork ${f.sandboxId} runs the counter (pid ${proc.pid}): ${JSON.stringify(procs)}`)
    }
    // Independent: a file written in one is in no other.
    await forks[0].files.write('/home/user/only.txt', 'fork 0')
    for (const other of [src, forks[1], forks[2]]) {
      assert.equal(await other.files.exists('/home/user/only.txt'), false, `only.txt shows up in ${other.sandboxId}`)
    }
    await forks[1].commands.run(`pkill -f "counte[r].tmp"`)
    const stopped = await readCounter(forks[1])
    await sleep(500)
    assert.equal(await readCounter(forks[1]), stopped, 'fork 1 counter stopped')
    const c2 = await readCounter(forks[2])
    await waitCounter(forks[2], c2 + 3)
    for (const f of forks) assert.equal(await f.kill(), true)

    assert.equal(await Sandbox.deleteSnapshot(snap.snapshotId, opts()), true)
    assert.equal(await Sandbox.deleteSnapshot(snap.snapshotId, opts()), false, 'a second delete: not found')
    const err = await rejection(Sandbox.create(snap.snapshotId, opts()), 'create from a deleted snapshot')
    assert.match(`${err.message}`, /404|not found/i, describeError(err))
    assert.equal(await src.kill(), true)
  })

  test('fork: two sandboxes from one running sandbox, with its files and processes', T, async () => {
    const src = await create(undefined, { timeoutMs: 600_000 })
    await src.files.write('/home/user/fork.txt', 'forked')
    await src.commands.run(COUNTER('/tmp/counter'), { background: true })
    await waitCounter(src, 10)
    const forks = await src.fork({ count: 2, timeoutMs: 600_000 })
    assert.equal(forks.length, 2)
    for (const f of forks) {
      assert.ok(!(f instanceof Error), `fork failed: ${describeError(f)}`)
      ids.push(f.sandboxId)
      assert.notEqual(f.sandboxId, src.sandboxId)
      assert.equal(await f.files.read('/home/user/fork.txt'), 'forked')
      const c = await readCounter(f)
      assert.ok(c >= 10, `fork ${f.sandboxId}: counter ${c}, not continuing`)
      await waitCounter(f, c + 3)
      assert.equal(await f.kill(), true)
    }
    assert.equal((await Sandbox.listSnapshots(opts({ sandboxId: src.sandboxId })).nextItems()).length, 0, 'a fork keeps no snapshot')
    assert.equal(await src.kill(), true)
  })

  test('bad input: pause of an unknown or killed sandbox is 404, double pause is 409', T, async () => {
    const unknown = await rejection(Sandbox.pause('i0000000000nosuchsandbox', opts()), 'pause unknown')
    assert.ok(unknown instanceof sdk.SandboxNotFoundError, describeError(unknown))
    const sbx = await create()
    assert.equal(await sbx.pause(), true)
    assert.equal(await sbx.pause(), false, 'double pause')
    assert.equal(await sbx.kill(), true)
    const killed = await rejection(Sandbox.pause(sbx.sandboxId, opts()), 'pause killed')
    assert.ok(killed instanceof sdk.SandboxNotFoundError, describeError(killed))
    const conn = await rejection(Sandbox.connect(sbx.sandboxId, opts()), 'connect killed')
    assert.ok(conn instanceof sdk.SandboxNotFoundError, describeError(conn))
  })

  test('latency of pause and resume, idle and holding 256 MiB (measured, not asserted)', T, async (t) => {
    const runs = 5
    for (const [label, setup] of [
      ['idle', async () => {}],
      [
        '256MiB',
        async (sbx) => {
          await sbx.commands.run(
            `python3 -c "
import time
b = bytearray(256 << 20)
for i in range(0, len(b), 4096):
    b[i] = 1
open('/tmp/ready', 'w').write('1')
time.sleep(1e9)
"`,
            { background: true },
          )
          await waitFor(() => sbx.files.exists('/tmp/ready'), { timeoutMs: 60_000, what: '256 MiB allocated' })
        },
      ],
    ]) {
      const sbx = await create(undefined, { timeoutMs: 600_000 })
      await setup(sbx)
      const pause = []
      const saved = []
      const resume = []
      for (let i = 0; i < runs; i++) {
        let t0 = performance.now()
        assert.equal(await sbx.pause(), true)
        pause.push(performance.now() - t0)
        await waitFor(() => cgroupGone(sbx.sandboxId), { timeoutMs: 120_000, intervalMs: 5, what: 'saved' })
        saved.push(performance.now() - t0)
        t0 = performance.now()
        await Sandbox.connect(sbx.sandboxId, opts({ timeoutMs: 600_000 }))
        resume.push(performance.now() - t0)
        assert.ok(await sbx.isRunning(), 'running after resume')
      }
      measured[label] = {
        runs,
        pauseMsP50: Math.round(median(pause)),
        savedMsP50: Math.round(median(saved)),
        resumeMsP50: Math.round(median(resume)),
        pauseMs: pause.map(Math.round),
        savedMs: saved.map(Math.round),
        resumeMs: resume.map(Math.round),
      }
      t.diagnostic(
        `${label}: pause p50 ${measured[label].pauseMsP50} ms (API returns, frozen), memory on disk and released p50 ${measured[label].savedMsP50} ms, resume (connect) p50 ${measured[label].resumeMsP50} ms`,
      )
      assert.equal(await sbx.kill(), true)
    }
  })

  test('after kill and stop, nothing is left on the host', T, async () => {
    await killAllSandboxes(server.url, key, ids)
    await stopServe(server)
    assert.deepEqual(hostTraces({ dataDir, bridge, ids }), [])
    teardownNetwork(bridge)
  })
})
