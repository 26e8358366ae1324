// Paddock benchmarks: what users feel through the official E2B SDK against a
// real `paddock serve`, each figure beside a baseline measured in the same
// run (bench/cmd/pbench). Prints a table and writes bench/RESULTS.md.
// Measures, never asserts. Run through bench/run.sh (`make bench`); see
// bench/README.md for the knobs.
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import { Sandbox } from 'e2b'

import { Serve } from './lib/serve.mjs'
import { PBench } from './lib/pbench.mjs'
import { summarize, median, mibps } from './lib/stats.mjs'
import * as res from './lib/resources.mjs'
import { parsePhases, writeReport } from './lib/report.mjs'

const here = path.dirname(fileURLToPath(import.meta.url))
const benchDir = path.resolve(here, '..')
const root = path.resolve(benchDir, '..')

// ---- configuration (environment) -------------------------------------------
const quick = process.env.BENCH_QUICK === '1'
const int = (name, def, quickDef) => {
  const v = process.env[name]
  if (v != null && v !== '') {
    const n = Number(v)
    if (!Number.isInteger(n) || n < 0) throw new Error(`${name}=${v}: want a non-negative integer`)
    return n
  }
  return quick ? quickDef : def
}
const cfg = {
  quick,
  n: int('BENCH_N', 200, 20), // sequential create→usable
  concurrency: (process.env.BENCH_CONCURRENCY || (quick ? '5' : '10,50')).split(',').filter(Boolean).map(Number),
  concSamples: int('BENCH_CONC_SAMPLES', 100, 10), // creates per concurrency level (whole rounds)
  cmdN: int('BENCH_CMD_N', 200, 50),
  streamMiB: int('BENCH_STREAM_MIB', 64, 16),
  streamRuns: int('BENCH_STREAM_RUNS', 3, 1),
  filesRuns: (process.env.BENCH_FILES_RUNS || (quick ? '20,10,2' : '100,30,5')).split(',').map(Number),
  densityMax: int('BENCH_DENSITY_MAX', 500, 50),
  densityMemFraction: 0.8,
  loadSeconds: int('BENCH_LOAD_SECONDS', 5, 2),
  loadConcurrency: int('BENCH_LOAD_CONCURRENCY', 16, 8),
  floorN: int('BENCH_FLOOR_N', 50, 10),
  profileSeconds: int('BENCH_PROFILE_SECONDS', 20, 0),
  poolSize: Math.max(1, int('BENCH_POOL_SIZE', 4, 4)), // --pool-size of the pool section's serve
  poolN: int('BENCH_POOL_N', 100, 20), // sequential creates from the pool (and as many cold)
  poolRounds: int('BENCH_POOL_ROUNDS', 5, 2), // back-to-back rounds of 2 × pool size creates
  poolSettleMs: int('BENCH_POOL_SETTLE_MS', 500, 500), // pause once the pool is full again, before the next create
  only: (process.env.BENCH_ONLY || '').split(',').filter(Boolean),
  bridge: process.env.BENCH_BRIDGE || 'pdbench0',
  subnet: process.env.BENCH_SUBNET || '10.250.0.0/16',
  poolBridge: process.env.BENCH_POOL_BRIDGE || `${process.env.BENCH_BRIDGE || 'pdbench0'}p`,
  poolSubnet: process.env.BENCH_POOL_SUBNET || '10.251.0.0/16',
  paddockBin: path.resolve(process.env.PADDOCK_BIN || path.join(root, 'bin/paddock')),
  pbenchBin: path.resolve(process.env.PBENCH_BIN || path.join(benchDir, '.out/pbench')),
  outDir: path.resolve(process.env.BENCH_OUT || path.join(benchDir, '.out')),
  results: path.resolve(process.env.BENCH_RESULTS || path.join(benchDir, 'RESULTS.md')),
}
const sections = ['create', 'pool', 'concurrent', 'commands', 'files', 'envd', 'density', 'control', 'kill', 'profile']
for (const s of cfg.only) if (!sections.includes(s)) throw new Error(`BENCH_ONLY: unknown section ${s} (known: ${sections.join(',')})`)
const want = (s) => cfg.only.length === 0 || cfg.only.includes(s) || (s === 'density' && cfg.only.some((o) => o === 'control' || o === 'kill'))

fs.mkdirSync(cfg.outDir, { recursive: true })
const log = (s) => process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${s}\n`)

// ---- run state -----------------------------------------------------------------
/** Every figure: {section, metric, unit:'ms'|'MiB/s'|'req/s'|'MiB'|'count'|'x', paddock, baseline, baselineName, note} */
const rows = []
const extra = { notes: [], phases: null, profileTop: null, buckets: null }
const facts = hostFacts()
const serve = new Serve({ bin: cfg.paddockBin, bridge: cfg.bridge, subnet: cfg.subnet, outDir: cfg.outDir, log })
const pb = new PBench(cfg.pbenchBin, log)
const created = new Set() // sandboxes this run created and has not killed
const seqIds = new Set()

function row(key, section, metric, unit, paddock, baseline, baselineName) {
  rows.push({ key, section, metric, unit, paddock, baseline, baselineName })
}

async function createSandbox() {
  // An hour of life: a loaded machine must not expire sandboxes mid-section.
  const s = await Sandbox.create({ ...serve.sdkOpts, timeoutMs: 3_600_000 })
  created.add(s.sandboxId)
  return s
}

async function kill(s) {
  await s.kill()
  created.delete(s.sandboxId)
}

/**
 * Starts `pbench apistub` answering creates with a real create response of
 * srv (one sandbox created and killed for it): the SDK against the stub
 * costs what the client costs (Node, the SDK, loopback HTTP) and nothing a
 * server does. Resolves to {opts (SDK options), stop()}.
 */
async function clientFloor(srv, name) {
  const r = await srv.api('POST', '/v2/sandboxes', { templateID: 'base', timeout: 600 })
  if (r.status !== 201) throw new Error(`client floor: create for a response body: HTTP ${r.status} ${JSON.stringify(r.body)}`)
  const del = await srv.api('DELETE', `/sandboxes/${r.body.sandboxID}`)
  if (del.status !== 204) throw new Error(`client floor: kill ${r.body.sandboxID}: HTTP ${del.status}`)
  const file = path.join(cfg.outDir, `apistub-${name}.json`)
  fs.writeFileSync(file, JSON.stringify(r.body) + '\n')
  const stub = await pb.apiStub(file)
  const url = `http://${stub.addr}`
  return { opts: { apiKey: srv.apiKey, apiUrl: url, sandboxUrl: url, requestTimeoutMs: 120_000 }, stop: stub.stop }
}

// ---- sections --------------------------------------------------------------------

/** Merges pbench results (samples appended, values of the last). */
function merge(a, b) {
  if (!a) return b
  for (const [k, v] of Object.entries(b.samples ?? {})) a.samples[k] = [...(a.samples[k] ?? []), ...v]
  Object.assign(a.values, b.values)
  return a
}

/** (1) create→usable, sequential (cold, no pool), beside the libcontainer floor and runc. */
async function sectionCreate() {
  // The baselines run in chunks between chunks of Paddock creates, so that
  // changes in machine load hit both alike.
  const chunks = Math.max(1, Math.min(4, cfg.n))
  log(`create→usable: ${cfg.n} sequential (+3 warm-up), floor and runc interleaved in ${chunks} chunks`)
  const createMs = [], usableMs = [], firstCmdMs = [], killMs = []
  let floor = null, runc = null
  for (let i = -3; i < cfg.n; i++) {
    const t0 = performance.now()
    const s = await createSandbox()
    const t1 = performance.now()
    await s.commands.run('true')
    const t2 = performance.now()
    await kill(s)
    const t3 = performance.now()
    if (i < 0) continue
    seqIds.add(s.sandboxId)
    createMs.push(t1 - t0)
    usableMs.push(t2 - t0)
    firstCmdMs.push(t2 - t1)
    killMs.push(t3 - t2)
    if ((i + 1) % Math.ceil(cfg.n / chunks) === 0 || i === cfg.n - 1) {
      floor = merge(floor, await pb.run(['floor', '--layer', serve.layer, '--work', scratch('floor'), '--warmup', '1', '--n', String(Math.ceil(cfg.floorN / chunks))]))
      runc = merge(runc, await pb.run(['runc', '--layer', serve.layer, '--work', scratch('runc'), '--warmup', '1', '--n', String(Math.ceil(Math.min(cfg.floorN, 30) / chunks))]))
    }
  }
  row('create.usable', 'create (sequential, cold)', 'Sandbox.create() → first commands.run("true") done', 'ms', summarize(usableMs), summarize(floor.samples.total), 'libcontainer floor (overlay+create+start+`true`; init: paddock-init, as paddock\'s)')
  row('create.usable.runc', 'create (sequential, cold)', '… same, against Debian runc', 'ms', summarize(usableMs), summarize(runc.samples.total), `\`runc run\` of \`true\` (${runc.notes?.[0] ?? 'runc'})`)
  row('create.returned', 'create (sequential, cold)', 'Sandbox.create() returned', 'ms', summarize(createMs), summarize(floor.samples.create_start), 'libcontainer Create+Run only')
  const guestBin = path.join(root, 'internal/guest/paddock-guest') // left by `make build`
  const st = await pb.run(['startup', '--bin', cfg.paddockBin, '--n', '30', ...(fs.existsSync(guestBin) ? ['--guest', guestBin] : [])])
  row('create.exec', 'create (sequential, cold)', `(reference) host: exec of bin/paddock (${st.values.binary_mib.toFixed(0)} MiB) \`version\`, the container init without cmd/paddock-init`, 'ms', summarize(st.samples.paddock_version), summarize(st.samples.true), 'host exec of `/bin/true`')
  if (st.samples.init_exec) {
    row('create.initexec', 'create (sequential, cold)', `(reference) host: exec of paddock-init (${st.values.init_binary_mib.toFixed(0)} MiB) to its exit; every create starts it once as the container init`, 'ms', summarize(st.samples.init_exec), summarize(st.samples.paddock_version), 'exec of bin/paddock `version` (same run)')
  }
  row('create.envdstart', 'create (sequential, cold)', '(reference) host: exec `paddock envd` until its port accepts', 'ms', summarize(st.samples.envd_listening), summarize(st.samples.true), 'host exec of `/bin/true`')
  if (st.samples.guest_envd_listening) {
    row('create.guestenvdstart', 'create (sequential, cold)', `(reference) host: exec \`paddock-guest envd\` (${st.values.guest_binary_mib.toFixed(0)} MiB, what sandboxes run) until its port accepts`, 'ms', summarize(st.samples.guest_envd_listening), summarize(st.samples.envd_listening), '`paddock envd` (same run)')
  }
  row('create.firstcmd', 'create (sequential, cold)', 'first commands.run("true") after create', 'ms', summarize(firstCmdMs), null, '')
  row('kill.seq', 'kill', 'sbx.kill() (sequential section, 1 sandbox alive)', 'ms', summarize(killMs), summarize(floor.samples.teardown), 'libcontainer kill+destroy+unmount')
  extra.floor = floor
}

/**
 * (1a) The warm pool: a second serve with --pool-size keeps started
 * sandboxes of base ready. Sequential creates from it, each once the pool is
 * full again (GET /health warmPool), interleaved with as many cold creates
 * on the main serve (no pool) as the baseline; then back-to-back creates
 * (twice the pool size, no pause) that drain it. Whether a create was served
 * from the pool is read from the pool serve's log ("sandbox created …
 * pool=true").
 */
async function sectionPool() {
  const size = cfg.poolSize
  const ps = new Serve({
    bin: cfg.paddockBin, bridge: cfg.poolBridge, subnet: cfg.poolSubnet, outDir: cfg.outDir, log,
    extraArgs: ['--pool-size', String(size)], logName: 'serve-pool.log',
  })
  const full = `base ${size}/${size}`
  const health = async () => (await (await fetch(`${ps.url}/health`)).json()).checks ?? {}
  const waitFull = async () => {
    const t0 = performance.now()
    for (;;) {
      if ((await health()).warmPool === full) return performance.now() - t0
      if (performance.now() - t0 > 60_000) throw new Error(`the warm pool did not refill within 60 s: ${(await health()).warmPool}`)
      await sleep(10)
    }
  }
  // After the pool is full again, the refill's tail (the new sandbox's
  // envd starting, serve's garbage collection) still runs for a moment.
  const settle = cfg.poolSettleMs
  const timed = async (opts) => {
    const t0 = performance.now()
    const s = await Sandbox.create({ ...opts, timeoutMs: 3_600_000 })
    const t1 = performance.now()
    await s.commands.run('true')
    const t2 = performance.now()
    return { s, create: t1 - t0, usable: t2 - t0, first: t2 - t1 }
  }
  await ps.start()
  try {
    // The pool serve extracts code-interpreter-v1 in the background at
    // start: let that finish so it does not load the measurements.
    const t0 = Date.now()
    while ((await health()).codeInterpreterTemplate === 'building' && Date.now() - t0 < 180_000) await sleep(500)
    const refill = await waitFull()
    log(`pool: serve --pool-size ${size} full after ${(refill / 1000).toFixed(1)} s more; ${cfg.poolN} sequential creates from it (+3 warm-up), each beside a cold one`)
    const pool = { create: [], usable: [], first: [], refill: [] }
    const cold = { create: [], usable: [], first: [] }
    const stub = { create: [], burst: [] }
    const seqIds = []
    const burst = [] // {id, create}
    const walls = []
    const floor = await clientFloor(ps, 'pool')
    try {
      for (let i = -3; i < cfg.poolN; i++) {
        await waitFull()
        await sleep(settle)
        const f = await timed(floor.opts)
        await waitFull()
        await sleep(settle)
        const c = await timed(serve.sdkOpts)
        await c.s.kill()
        await waitFull()
        await sleep(settle)
        const p = await timed(ps.sdkOpts)
        await p.s.kill()
        pool.refill.push(await waitFull())
        if (i < 0) continue
        seqIds.push(p.s.sandboxId)
        for (const k of ['create', 'usable', 'first']) cold[k].push(c[k]), pool[k].push(p[k])
        stub.create.push(f.create)
      }
      log(`pool: ${cfg.poolRounds} rounds of ${2 * size} back-to-back creates`)
      for (let r = 0; r < cfg.poolRounds; r++) {
        await waitFull()
        await sleep(settle)
        const alive = []
        const w0 = performance.now()
        for (let i = 0; i < 2 * size; i++) {
          const x = await timed(ps.sdkOpts)
          alive.push(x.s)
          burst.push({ id: x.s.sandboxId, create: x.create, usable: x.usable, i })
        }
        walls.push(performance.now() - w0)
        for (const s of alive) await s.kill()
        await waitFull()
        await sleep(settle)
        for (let i = 0; i < size; i++) stub.burst.push((await timed(floor.opts)).create)
      }
    } finally {
      await floor.stop()
    }
    // Which creates the pool served, from the serve's log.
    const served = new Map() // id → server-side take ms
    for (const line of fs.readFileSync(ps.logPath, 'utf8').split('\n')) {
      if (!line.includes('msg="sandbox created"') || !line.includes('pool=true')) continue
      const id = /\ssandbox=(\S+)/.exec(line)?.[1]
      if (id) served.set(id, Number(/\sms=([0-9.]+)/.exec(line)?.[1]))
    }
    const seqHits = seqIds.filter((id) => served.has(id)).length
    const hit = burst.filter((b) => served.has(b.id)), miss = burst.filter((b) => !served.has(b.id))
    const sec = `warm pool (serve --pool-size ${size})`
    const coldName = 'cold create, serve without pool (same run, interleaved)'
    row('pool.create', sec, `Sandbox.create() returned, sequential, pool refilled and ${settle} ms of rest before each (${seqHits}/${seqIds.length} from the pool)`, 'ms', summarize(pool.create), summarize(cold.create), coldName)
    row('pool.floor', sec, '… the same, beside the SDK against a stand-in that answers at once (the client\'s floor: Node, the SDK, loopback HTTP; same rest, interleaved)', 'ms', summarize(pool.create), summarize(stub.create), 'Sandbox.create() against `pbench apistub` (static server, same response body)')
    row('pool.usable', sec, '… create → first commands.run("true") done', 'ms', summarize(pool.usable), summarize(cold.usable), coldName)
    row('pool.firstcmd', sec, '… first commands.run("true") after create', 'ms', summarize(pool.first), summarize(cold.first), coldName)
    row('pool.take', sec, 'take on the server (POST /init + record write; serve log)', 'ms', summarize(seqIds.map((id) => served.get(id)).filter((v) => v != null && !Number.isNaN(v))), null, '')
    row('pool.refill', sec, 'pool full again after a create + kill (GET /health warmPool polled every 10 ms)', 'ms', summarize(pool.refill.slice(3)), null, '')
    row('pool.burst.hit', sec, `back-to-back, ${2 * size} per round × ${cfg.poolRounds}: Sandbox.create() served from the pool (${hit.length})`, 'ms', summarize(hit.map((b) => b.create)), summarize(cold.create), coldName)
    row('pool.burst.floor', sec, `… the same back-to-back creates, beside the SDK against the stand-in (${size} per round, back-to-back)`, 'ms', summarize(hit.map((b) => b.create)), summarize(stub.burst), 'Sandbox.create() against `pbench apistub`, back-to-back')
    row('pool.burst.miss', sec, `… after it drained: cold, while it refills (${miss.length})`, 'ms', summarize(miss.map((b) => b.create)), summarize(cold.create), coldName)
    row('pool.burst.usable', sec, '… back-to-back create → first command done, all', 'ms', summarize(burst.map((b) => b.usable)), summarize(cold.usable), coldName)
    row('pool.burst.wall', sec, `… wall time for ${2 * size} back-to-back create→first command`, 'ms', summarize(walls), null, '')
  } finally {
    await ps.stop()
  }
}

/** (1b) create→usable with c creates at once. */
async function sectionConcurrent() {
  for (const c of cfg.concurrency) {
    const rounds = Math.max(1, Math.ceil(cfg.concSamples / c))
    log(`create→usable: ${c} at once × ${rounds} rounds`)
    const usable = [], walls = []
    for (let r = 0; r < rounds; r++) {
      const t0 = performance.now()
      const got = await Promise.all(
        Array.from({ length: c }, async () => {
          const s0 = performance.now()
          const s = await createSandbox()
          await s.commands.run('true')
          return { s, ms: performance.now() - s0 }
        }),
      )
      walls.push(performance.now() - t0)
      usable.push(...got.map((g) => g.ms))
      for (let i = 0; i < got.length; i += 10) await Promise.all(got.slice(i, i + 10).map((g) => kill(g.s)))
    }
    const floor = await pb.run(['floor', '--layer', serve.layer, '--work', scratch('floorc'), '-c', String(c), '--n', String(c * Math.min(rounds, 3))])
    row(`conc.${c}.usable`, `create (${c} at once)`, 'per sandbox: create → first command done', 'ms', summarize(usable), summarize(floor.samples.total), `libcontainer floor, ${c} at once`)
    row(`conc.${c}.wall`, `create (${c} at once)`, `wall time for ${c}`, 'ms', summarize(walls), summarize(floor.samples.round_wall), `libcontainer floor, ${c} at once`)
  }
}

/** (2) commands.run round trip and stdout streaming. */
async function sectionCommands() {
  log(`commands: ${cfg.cmdN} × commands.run('true'), ${cfg.streamRuns} × ${cfg.streamMiB} MiB stdout`)
  const s = await createSandbox()
  const runMs = [], rootMs = [], streamMs = [], stubMs = []
  let floor
  try {
    floor = await clientFloor(serve, 'commands')
    // Each beside the same call against a stand-in envd whose process
    // ends at once: the client's own share of a command.
    const stub = await Sandbox.create({ ...floor.opts, timeoutMs: 3_600_000 })
    for (let i = -10; i < cfg.cmdN; i++) {
      let t0 = performance.now()
      await s.commands.run('true')
      if (i >= 0) runMs.push(performance.now() - t0)
      t0 = performance.now()
      await stub.commands.run('true')
      if (i >= 0) stubMs.push(performance.now() - t0)
    }
    for (let i = -5; i < Math.min(cfg.cmdN, 100); i++) {
      const t0 = performance.now()
      await s.commands.run('true', { user: 'root' })
      if (i >= 0) rootMs.push(performance.now() - t0)
    }
    const bytes = cfg.streamMiB << 20
    for (let i = -1; i < cfg.streamRuns; i++) {
      let got = 0
      const t0 = performance.now()
      await s.commands.run(`head -c ${bytes} /dev/zero`, { onStdout: (d) => (got += d.length), timeoutMs: 0 })
      const ms = performance.now() - t0
      if (got !== bytes) throw new Error(`stdout stream: got ${got} chars, want ${bytes}`)
      if (i >= 0) streamMs.push(ms)
    }
  } finally {
    await floor?.stop()
    await kill(s)
  }
  const host = await pb.run(['exec', '--n', String(cfg.cmdN), '--stream-mib', String(cfg.streamMiB), '--stream-runs', String(Math.max(cfg.streamRuns, 3))])
  row('commands.true', 'commands', 'commands.run("true") (default user, `bash -l -c`)', 'ms', summarize(runMs), summarize(host.samples.true), 'host fork+exec of `true`')
  row('commands.floor', 'commands', '… the same, beside the SDK against a stand-in envd whose process ends at once (the client\'s floor: Node, the SDK, loopback HTTP; interleaved)', 'ms', summarize(runMs), summarize(stubMs), 'commands.run("true") against `pbench apistub` (Connect stream: start, end)')
  row('commands.root', 'commands', 'commands.run("true", {user:"root"})', 'ms', summarize(rootMs), summarize(host.samples.bash_l_true), 'host fork+exec of `bash -l -c true` (no dotfiles)')
  row('commands.hostbash', 'commands', '(host reference) `bash -c true`', 'ms', summarize(host.samples.bash_c_true), summarize(host.samples.true), 'host fork+exec of `true`')
  const bytes = cfg.streamMiB << 20
  row('commands.stream', 'commands', `stdout streaming (${cfg.streamMiB} MiB, onStdout)`, 'MiB/s', mibps(bytes, median(streamMs)), mibps(host.values.stream_bytes, median(host.samples.stream)), 'host pipe from `head -c`')
}

/** (3) files.write / files.read beside a plain Go file server on loopback. */
async function sectionFiles() {
  const sizes = [
    { label: '1 KiB', bytes: 1 << 10, runs: cfg.filesRuns[0] ?? 100 },
    { label: '1 MiB', bytes: 1 << 20, runs: cfg.filesRuns[1] ?? 30 },
    { label: '64 MiB', bytes: 64 << 20, runs: cfg.filesRuns[2] ?? 5 },
  ]
  log(`files: ${sizes.map((z) => `${z.runs} × ${z.label}`).join(', ')} write+read`)
  const s = await createSandbox()
  const fsrv = await pb.fileServer(scratch('files'))
  const base = `http://${fsrv.addr}/files`
  // The same download through the proxy and envd with fetch, asking for
  // identity: what files.read would cost without on-the-fly gzip.
  const proxied = (p) => `${serve.url}/files?path=${encodeURIComponent(p)}`
  const proxyHeaders = { 'E2b-Sandbox-Id': s.sandboxId, 'E2b-Sandbox-Port': '49983', 'X-Access-Token': s.envdAccessToken ?? '' }
  const opTimeout = 60_000
  try {
    for (const z of sizes) {
      const data = randomBytes(z.bytes)
      const ab = data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength)
      const w = [], r = [], ri = [], bw = [], br = []
      let readFailed = null
      const warm = z.bytes > 8 << 20 ? 1 : 3
      for (let i = -warm; i < z.runs; i++) {
        const p = `/tmp/bench-${i & 3}.bin`
        const t0 = performance.now()
        await s.files.write(p, ab, { requestTimeoutMs: opTimeout })
        const t1 = performance.now()
        if (i >= 0) w.push(t1 - t0)
        if (!readFailed) {
          try {
            const got = await s.files.read(p, { format: 'bytes', requestTimeoutMs: opTimeout })
            if (got.byteLength !== z.bytes) throw new Error(`files.read ${p}: ${got.byteLength} bytes, want ${z.bytes}`)
            if (i >= 0) r.push(performance.now() - t1)
          } catch (e) {
            readFailed = `files.read ${z.label} failed after ${((performance.now() - t1) / 1000).toFixed(1)} s (${r.length} runs done): ${e.message}`
            log(readFailed)
            extra.notes.push(readFailed)
          }
        }
        const t2 = performance.now()
        const ir = await fetch(proxied(p), { headers: { ...proxyHeaders, 'Accept-Encoding': 'identity' } })
        const ib = await ir.arrayBuffer()
        if (ir.status !== 200 || ib.byteLength !== z.bytes) throw new Error(`GET /files identity through the proxy: ${ir.status}, ${ib.byteLength} bytes`)
        const t3 = performance.now()
        // The baseline: the same multipart upload and download with fetch.
        const form = new FormData()
        form.append('file', new Blob([ab]), p)
        const pr = await fetch(`${base}?path=${encodeURIComponent(p)}`, { method: 'POST', body: form })
        await pr.arrayBuffer()
        const t4 = performance.now()
        const gr = await fetch(`${base}?path=${encodeURIComponent(p)}`)
        const gb = await gr.arrayBuffer()
        const t5 = performance.now()
        if (pr.status !== 200 || gb.byteLength !== z.bytes) throw new Error(`file server baseline: ${pr.status}, ${gb.byteLength} bytes`)
        if (i < 0) continue
        ri.push(t3 - t2), bw.push(t4 - t3), br.push(t5 - t4)
      }
      const key = (k) => (z.bytes === 64 << 20 ? `files.${k}64` : `files.${k}tp.${z.bytes}`)
      row(`files.write.${z.bytes}`, 'files', `files.write ${z.label}`, 'ms', summarize(w), summarize(bw), 'Go file server on loopback (multipart POST, fetch)')
      row(`files.read.${z.bytes}`, 'files', `files.read ${z.label}${readFailed ? ' (FAILED, see notes)' : ''}`, 'ms', summarize(r), summarize(br), 'Go file server on loopback (GET, fetch)')
      row(`files.readid.${z.bytes}`, 'files', `GET /files ${z.label} via proxy, Accept-Encoding: identity (fetch)`, 'ms', summarize(ri), summarize(br), 'Go file server on loopback (GET, fetch)')
      if (z.bytes >= 1 << 20) {
        row(key('write'), 'files', `files.write ${z.label} throughput`, 'MiB/s', mibps(z.bytes, median(w)), mibps(z.bytes, median(bw)), 'Go file server on loopback')
        row(key('read'), 'files', `files.read ${z.label} throughput`, 'MiB/s', readFailed && r.length === 0 ? null : mibps(z.bytes, median(r)), mibps(z.bytes, median(br)), 'Go file server on loopback')
        row(key('readid'), 'files', `GET /files ${z.label} identity via proxy throughput`, 'MiB/s', mibps(z.bytes, median(ri)), mibps(z.bytes, median(br)), 'Go file server on loopback')
      }
    }
  } finally {
    await fsrv.stop()
    await kill(s)
  }
}

/** envd directly vs through the proxy (Go client), for the proxy's cost. */
async function sectionEnvd() {
  const r = await pb.run(['envd', '--api', serve.url, '--n', String(cfg.cmdN), '--stream-mib', String(cfg.streamMiB), '--stream-runs', String(cfg.streamRuns)])
  row('proxy.health', 'proxy', 'GET envd /health through the proxy (Go client)', 'ms', summarize(r.samples.health_proxy), summarize(r.samples.health_direct), 'same, dialled inside the sandbox netns (no proxy)')
  row('proxy.run', 'proxy', 'process.Start `bash -l -c true` through the proxy (Go client)', 'ms', summarize(r.samples.run_true_proxy), summarize(r.samples.run_true_direct), 'same, no proxy')
  row('proxy.list', 'proxy', 'process.List (unary Connect RPC) through the proxy (Go client)', 'ms', summarize(r.samples.list_proxy), summarize(r.samples.list_direct), 'same, no proxy')
  row('proxy.exec', 'proxy', 'process.Start `/bin/true` (no shell; streamed start + end events) through the proxy (Go client)', 'ms', summarize(r.samples.exec_true_proxy), summarize(r.samples.exec_true_direct), 'same, no proxy')
  row('proxy.relay.list', 'proxy', '(floor of any proxy) process.List through a bare TCP relay (Go client)', 'ms', summarize(r.samples.list_relay), summarize(r.samples.list_direct), 'same, no relay')
  row('proxy.relay.exec', 'proxy', '(floor of any proxy) process.Start `/bin/true` through a bare TCP relay (Go client)', 'ms', summarize(r.samples.exec_true_relay), summarize(r.samples.exec_true_direct), 'same, no relay')
  row('proxy.relay.health', 'proxy', '(floor of any proxy) GET envd /health through a bare TCP relay on the host (Go client)', 'ms', summarize(r.samples.health_relay), summarize(r.samples.health_direct), 'same, no relay')
  row('proxy.relay.run', 'proxy', '(floor of any proxy) process.Start `bash -l -c true` through a bare TCP relay (Go client)', 'ms', summarize(r.samples.run_true_relay), summarize(r.samples.run_true_direct), 'same, no relay')
  row('proxy.stream', 'proxy', `stdout stream ${cfg.streamMiB} MiB through the proxy (Go client)`, 'MiB/s', mibps(r.values.stream_bytes, median(r.samples.stream_proxy)), mibps(r.values.stream_bytes, median(r.samples.stream_direct)), 'same, no proxy')
  extra.proxy = {
    health: median(r.samples.health_proxy) - median(r.samples.health_direct),
    run: median(r.samples.run_true_proxy) - median(r.samples.run_true_direct),
    list: median(r.samples.list_proxy) - median(r.samples.list_direct),
    exec: median(r.samples.exec_true_proxy) - median(r.samples.exec_true_direct),
    relayList: median(r.samples.list_relay) - median(r.samples.list_direct),
    relayExec: median(r.samples.exec_true_relay) - median(r.samples.exec_true_direct),
    relayHealth: median(r.samples.health_relay) - median(r.samples.health_direct),
    relayRun: median(r.samples.run_true_relay) - median(r.samples.run_true_direct),
  }
}

/** (4) density: idle sandboxes until the max or 80% of memory; create latency as the count grows. */
async function sectionDensity() {
  log(`density: up to ${cfg.densityMax} idle sandboxes (stop at ${cfg.densityMemFraction * 100}% of memory)`)
  await sleep(2000)
  const m0 = res.meminfo()
  const serveRss0 = res.processRss(serve.pid)
  const lat = []
  const ids = []
  let stop = 'reached the maximum'
  for (let i = 0; i < cfg.densityMax; i++) {
    const m = res.meminfo()
    if (m.MemTotal - m.MemAvailable >= cfg.densityMemFraction * m.MemTotal) {
      stop = `memory at ${cfg.densityMemFraction * 100}%`
      break
    }
    const t0 = performance.now()
    let s
    try {
      s = await createSandbox()
    } catch (e) {
      stop = `create ${i + 1} failed: ${String(e.message).replace(/\s+/g, ' ').slice(0, 300)}`
      log(stop)
      break
    }
    lat.push(performance.now() - t0)
    ids.push(s.sandboxId)
    if ((i + 1) % 50 === 0) log(`density: ${i + 1} sandboxes, last create ${lat.at(-1).toFixed(0)} ms`)
  }
  await sleep(5000)
  const m1 = res.meminfo()
  const n = ids.length
  let usage = 0, rss = 0, pss = 0
  for (const id of ids) {
    const x = res.sandboxMemory(id)
    usage += x.usage
    rss += x.rss
    pss += x.pss
  }
  const serveRss1 = res.processRss(serve.pid)
  const cpu0 = res.processCpuSeconds(serve.pid)
  await sleep(10_000)
  const serveCpu = (res.processCpuSeconds(serve.pid) - cpu0) / 10
  const idle = extra.idle ?? { values: {}, samples: {} }
  const MiB = 1 << 20
  const buckets = []
  for (let i = 0; i < lat.length; i += 50) buckets.push({ from: i + 1, to: Math.min(i + 50, lat.length), s: summarize(lat.slice(i, i + 50)) })
  if (/session key/.test(stop)) {
    const maxkeys = fs.readFileSync('/proc/sys/kernel/keys/maxkeys', 'utf8').trim()
    extra.notes.push(`density stopped on the kernel's key quota: kernel.keys.maxkeys=${maxkeys} per user, and every sandbox's root is host uid 100000 (one uid range for all sandboxes) whose init joins a fresh session keyring (other sandboxes on this host count too)`)
  }
  extra.buckets = buckets
  extra.density = { n, stop: stop.startsWith('create') ? `create ${n + 1} failed` : stop, memAvailableFull: m1.MemAvailable }
  const shortStop = stop.startsWith('create') ? `create ${n + 1} failed, see notes` : stop
  if (shortStop !== stop) extra.notes.push(`density: ${stop}`)
  row('density.count', 'density', `idle sandboxes created (stop: ${shortStop})`, 'count', n, idle.values.count, 'libcontainer floor (`sleep infinity`, 50 measured)')
  row('density.host', 'density', 'host memory per idle sandbox (MemAvailable delta)', 'MiB', (m0.MemAvailable - m1.MemAvailable) / n / MiB, idle.values.host_mib_per_container, 'libcontainer floor, per container')
  row('density.cgusage', 'density', 'cgroup memory.usage per sandbox (incl. page cache)', 'MiB', usage / n / MiB, idle.values.cgroup_usage_mib_per_container, 'libcontainer floor')
  row('density.cgrss', 'density', 'cgroup rss per sandbox (anonymous)', 'MiB', rss / n / MiB, idle.values.cgroup_rss_mib_per_container, 'libcontainer floor')
  row('density.pss', 'density', 'PSS of the sandbox processes (envd)', 'MiB', pss / n / MiB, idle.values.init_pss_mib_per_container, 'PSS of `sleep`')
  row('density.serverss', 'density', 'paddock serve RSS growth per sandbox', 'MiB', (serveRss1 - serveRss0) / n / MiB, null, '')
  row('density.servecpu', 'density', `paddock serve CPU while ${n} sandboxes idle`, '%CPU', serveCpu * 100, null, '')
  row('density.growth', 'density', 'Sandbox.create() p50, first 50 → last 50', 'x', buckets.length ? buckets.at(-1).s.p50 / buckets[0].s.p50 : null, null, '')
  row('density.create', 'density', `Sandbox.create() while filling (1..${n})`, 'ms', summarize(lat), summarize(idle.samples.create_start), 'libcontainer floor Create+Run (sleep)')
  return ids
}

/** (5) control-plane reads with the density sandboxes alive. */
async function sectionControl(ids) {
  const idsFile = path.join(cfg.outDir, 'ids.txt')
  fs.writeFileSync(idsFile, ids.join('\n') + '\n')
  const common = ['-c', String(cfg.loadConcurrency), '-d', `${cfg.loadSeconds}s`]
  for (const [kind, label, url] of [
    ['list', `GET /v2/sandboxes (page of ≤100, ${ids.length} alive)`, `${serve.url}/v2/sandboxes`],
    ['get', `GET /sandboxes/{id} (${ids.length} alive)`, `${serve.url}/sandboxes/{id}`],
  ]) {
    const args = ['loadgen', '--url', url, '--ids', idsFile, ...common]
    const { out: p, top } = await profileWhile(`control-${kind}`, Math.max(1, cfg.loadSeconds - 1), () => pb.run(args))
    if (kind === 'list') extra.listTop = top
    const b = await pb.run([...args, '--baseline'])
    if (p.values.errors) extra.notes.push(`${label}: ${p.values.errors} errors (${p.notes?.join('; ')})`)
    row(`control.${kind}.rps`, 'control plane', `${label}: throughput (${cfg.loadConcurrency} conns)`, 'req/s', p.values.rps, b.values.rps, `static Go server, same ${b.values.response_bytes} B body`)
    row(`control.${kind}.lat`, 'control plane', `${label}: latency`, 'ms', summarize(p.samples.latency), summarize(b.samples.latency), 'static Go server')
  }
}

/** (6) kill: time to kill and until every resource is gone, for the density sandboxes. */
async function sectionKill(ids) {
  log(`kill: ${ids.length} sandboxes, one at a time, polling until every resource is gone`)
  const hier = res.cgroupHierarchies()
  const killMs = [], goneMs = []
  const stragglers = []
  for (const id of ids) {
    const veth = res.hostVeth(serve.dataDir, id)
    const t0 = performance.now()
    await Sandbox.kill(id, serve.sdkOpts)
    created.delete(id)
    const t1 = performance.now()
    let left
    for (;;) {
      left = res.leftovers(serve.dataDir, id, veth, hier)
      if (left.length === 0 || performance.now() - t0 > 10_000) break
      await sleep(1)
    }
    const t2 = performance.now()
    if (left.length) stragglers.push(`${id}: ${left.join(', ')}`)
    killMs.push(t1 - t0)
    goneMs.push(t2 - t0)
  }
  await sleep(5000)
  if (extra.density?.memAvailableFull && ids.length) {
    const freed = res.meminfo().MemAvailable - extra.density.memAvailableFull
    row('density.released', 'density', `host memory released per sandbox after killing all ${ids.length} (MemAvailable delta)`, 'MiB', freed / ids.length / (1 << 20), extra.idle?.values?.host_mib_per_container, 'libcontainer floor, per container (at creation)')
  }
  if (stragglers.length) extra.notes.push(`kill: ${stragglers.length} sandboxes left resources after 10 s: ${stragglers.slice(0, 3).join('; ')}`)
  const veth = await pb.run(['veth', '--n', '30']).catch((e) => (extra.notes.push(`pbench veth: ${e.message}`), null))
  if (veth) row('kill.veth', 'kill', '(reference) delete a veth whose peer is in a netns, synchronously', 'ms', summarize(veth.samples.veth_del), summarize(veth.samples.netns_del), 'removing the netns file alone')
  const floorKill = extra.idle?.samples?.kill_cleanup
  row('kill.returned', 'kill', `Sandbox.kill() with ${ids.length} alive → returned`, 'ms', summarize(killMs), summarize(floorKill), 'libcontainer floor: kill+destroy+unmount+rm')
  row('kill.gone', 'kill', '… until cgroups, veth, netns, mounts, dirs are all gone', 'ms', summarize(goneMs), summarize(floorKill), 'libcontainer floor')
}

/** Fetches a CPU profile of serve for `seconds` while `work` runs; saves it and its top (by cumulative time). */
async function profileWhile(name, seconds, work) {
  const prof = fetch(`${serve.pprofUrl}/debug/pprof/profile?seconds=${seconds}`).then((r) => r.arrayBuffer())
  const out = await work()
  const file = path.join(cfg.outDir, `serve-${name}.pprof`)
  fs.writeFileSync(file, Buffer.from(await prof))
  let top = null
  try {
    top = execFileSync('go', ['tool', 'pprof', '-top', '-cum', '-nodecount=40', cfg.paddockBin, file], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
    fs.writeFileSync(path.join(cfg.outDir, `serve-${name}.top.txt`), top)
  } catch (e) {
    extra.notes.push(`go tool pprof ${file} failed: ${e.message}`)
  }
  return { out, top }
}

/** CPU profile of serve while it creates, runs `true` in and kills sandboxes. */
async function sectionProfile() {
  if (!cfg.profileSeconds) return
  log(`profile: ${cfg.profileSeconds} s CPU profile of serve during create→run→kill`)
  let n = 0
  const { top } = await profileWhile('create', cfg.profileSeconds, async () => {
    const stopAt = Date.now() + cfg.profileSeconds * 1000
    while (Date.now() < stopAt) {
      const s = await createSandbox()
      await s.commands.run('true')
      await kill(s)
      n++
    }
  })
  extra.profileTop = top
  extra.profileCreates = n
}

// ---- helpers ------------------------------------------------------------------

function scratch(name) {
  // On the data dir's filesystem, like Paddock's own sandboxes.
  return path.join(serve.dataDir, 'bench-' + name)
}

function hostFacts() {
  const sh = (cmd, args) => {
    try {
      return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()
    } catch {
      return '?'
    }
  }
  const cpus = os.cpus()
  let distro = '?'
  try {
    distro = /^PRETTY_NAME="?([^"\n]*)/m.exec(fs.readFileSync('/etc/os-release', 'utf8'))[1]
  } catch {}
  return {
    date: new Date().toISOString(),
    host: os.hostname(),
    cpu: `${cpus.length} × ${cpus[0]?.model ?? '?'}`,
    cpuCount: cpus.length,
    memGiB: (os.totalmem() / 2 ** 30).toFixed(1),
    kernel: `${os.type()} ${os.release()}`,
    distro,
    paddock: sh(cfg.paddockBin, ['version']).split('\n')[0],
    commit: sh('git', ['-C', root, 'rev-parse', '--short', 'HEAD']) + (sh('git', ['-C', root, 'status', '--porcelain', '--untracked-files=no']) ? ' (+ local changes)' : ''),
    runtime: 'local: runc libcontainer v1.5.2 in-process, overlayfs, cgroup v1, userns, seccomp',
    node: process.version,
    sdk: JSON.parse(fs.readFileSync(path.join(here, 'node_modules/e2b/package.json'), 'utf8')).version,
    loadStart: os.loadavg(),
  }
}

// ---- main ----------------------------------------------------------------------

let failed = null
const stopAll = async () => {
  try {
    await serve.stop()
  } catch (e) {
    log(`cleanup failed: ${e.message}`)
  }
}
for (const [sig, code] of [['SIGINT', 130], ['SIGTERM', 143], ['SIGHUP', 129]]) {
  process.once(sig, () => {
    log(`${sig}; cleaning up`)
    stopAll().finally(() => process.exit(code))
  })
}

/** Runs one section; a failure is reported and the run goes on. */
async function section(name, fn) {
  if (!want(name)) return undefined
  try {
    return await fn()
  } catch (e) {
    const msg = `section ${name} failed: ${String(e.message).split('\n')[0]}`
    log(`${msg}\n${e.stack}`)
    extra.notes.push(msg)
    extra.failedSections = [...(extra.failedSections ?? []), name]
    return undefined
  }
}

try {
  await serve.start()
  pb.setApiKey(serve.apiKey)
  await section('create', sectionCreate)
  await section('pool', sectionPool)
  await section('concurrent', sectionConcurrent)
  await section('commands', sectionCommands)
  await section('files', sectionFiles)
  await section('envd', sectionEnvd)
  if (want('density')) {
    // The idle floor first: it shares per-user kernel limits (keys) with the sandboxes.
    extra.idle = await section('density', () => pb.run(['idle', '--layer', serve.layer, '--work', scratch('idle'), '--n', String(Math.min(50, cfg.densityMax))]))
    const ids = (await section('density', sectionDensity)) ?? [...created]
    await section('control', () => sectionControl(ids))
    await section('kill', () => sectionKill(ids))
    for (const id of ids) if (created.has(id)) await Sandbox.kill(id, serve.sdkOpts).then(() => created.delete(id)).catch(() => {})
  }
  await section('profile', sectionProfile)
} catch (e) {
  failed = e
  log(`FAILED: ${e.stack || e.message}`)
} finally {
  facts.loadEnd = os.loadavg()
  if (fs.existsSync(serve.logPath ?? '')) extra.phases = parsePhases(fs.readFileSync(serve.logPath, 'utf8'), seqIds)
  await stopAll()
}

const argv = process.env.BENCH_COMMAND || 'make bench'
const text = writeReport({ file: cfg.results, facts, cfg, rows, extra, command: argv, failed })
process.stdout.write(text)
process.exit(failed || extra.failedSections ? 1 : 0)
