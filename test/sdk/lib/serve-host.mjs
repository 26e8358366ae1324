// Host side of the `paddock serve` suites: pick a free port and subnet, start
// and stop a server, kill every sandbox it knows, and list what a sandbox
// would leave on the host (cgroups, network namespaces, veths, mounts,
// processes, runtime directories); serveFixture gives a suite its own server.
// Used by the SDK suites, the bench and,
// as a small CLI, by run.sh:
//
//   node lib/serve-host.mjs free-port
//   node lib/serve-host.mjs pick-subnet <seed>
//   node lib/serve-host.mjs kill-sandboxes <api-url> <key-file> [ids-file]
//   node lib/serve-host.mjs check-host <data-dir> <bridge> [ids-file]
//   node lib/serve-host.mjs teardown-network <bridge>
//
// Everything here runs on the host as root; nothing talks to envd.
import { execFileSync, spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { sleep } from './util.mjs'

/** The cgroup every sandbox lives under in each v1 controller (runtime/local's default). */
export const CGROUP_PARENT = 'paddock'
/** Where the network manager keeps sandbox namespaces (network.DefaultNetnsDir). */
export const NETNS_DIR = '/run/paddock/netns'
const CGROUP_ROOT = '/sys/fs/cgroup'

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
  })
}

const ipToInt = (ip) => ip.split('.').reduce((a, o) => a * 256 + Number(o), 0)
function overlaps(a, b) {
  const [aip, abits] = a.split('/')
  const [bip, bbits] = b.split('/')
  const bits = Math.min(Number(abits ?? 32), Number(bbits ?? 32))
  const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0
  return ((ipToInt(aip) & mask) >>> 0) === ((ipToInt(bip) & mask) >>> 0)
}

/**
 * A /24 in 10.200.0.0-10.239.255.0 that overlaps no IPv4 route or address of
 * this host (other Paddock servers, other tests), chosen from seed.
 */
export function pickSubnet(seed = process.pid) {
  const used = []
  for (const args of [
    ['-4', '-o', 'route', 'show', 'table', 'all'],
    ['-4', '-o', 'addr', 'show'],
  ]) {
    const out = execFileSync('ip', args, { encoding: 'utf8' })
    for (const m of out.matchAll(/\b(\d+\.\d+\.\d+\.\d+(?:\/\d+)?)\b/g)) used.push(m[1])
  }
  const n = 40 * 256
  for (let i = 0; i < n; i++) {
    const k = (Number(seed) * 7919 + i) % n
    const candidate = `10.${200 + Math.floor(k / 256)}.${k % 256}.0/24`
    if (!used.some((u) => overlaps(candidate, u))) return candidate
  }
  throw new Error('no free /24 for a test bridge in 10.200.0.0/13')
}

/** The host-side veth name of a sandbox (network.vethName: "pd" + 13 base32 chars of sha256(bridge \0 id)). */
export function vethName(bridge, id) {
  const sum = createHash('sha256').update(`${bridge}\0${id}`).digest()
  const alphabet = 'abcdefghijklmnopqrstuvwxyz234567'
  let bits = 0
  let value = 0
  let out = ''
  for (const byte of sum) {
    value = (value << 8) | byte
    bits += 8
    while (bits >= 5 && out.length < 13) {
      out += alphabet[(value >>> (bits - 5)) & 31]
      bits -= 5
    }
    value &= (1 << bits) - 1
    if (out.length >= 13) break
  }
  return `pd${out}`
}

async function api(apiUrl, key, method, path) {
  const res = await fetch(new URL(path, apiUrl), { method, headers: { 'X-API-KEY': key } })
  const text = await res.text()
  return { status: res.status, headers: res.headers, text }
}

/**
 * Kill every sandbox the key's team has on the server (all pages, running and
 * paused), plus the IDs given (those of another team are simply not found).
 * Returns the IDs it killed. Throws if any kill fails or the listing is not
 * empty afterwards.
 */
export async function killAllSandboxes(apiUrl, key, extraIds = []) {
  const list = async () => {
    const ids = []
    let token = ''
    for (let page = 0; page < 1000; page++) {
      const q = new URLSearchParams({ limit: '100' })
      if (token) q.set('nextToken', token)
      const res = await api(apiUrl, key, 'GET', `/v2/sandboxes?${q}`)
      if (res.status !== 200) throw new Error(`GET /v2/sandboxes: ${res.status} ${res.text}`)
      ids.push(...JSON.parse(res.text).map((s) => s.sandboxID))
      token = res.headers.get('x-next-token') || ''
      if (!token) break
    }
    return ids
  }
  const killed = []
  const errors = []
  for (const id of new Set([...(await list()), ...extraIds])) {
    const res = await api(apiUrl, key, 'DELETE', `/sandboxes/${encodeURIComponent(id)}`)
    if (res.status === 204) killed.push(id)
    else if (res.status !== 404) errors.push(`DELETE /sandboxes/${id}: ${res.status} ${res.text}`)
  }
  const left = await list()
  if (left.length) errors.push(`still listed after kill: ${left.join(', ')}`)
  if (errors.length) throw new Error(errors.join('; '))
  return killed
}

function readIds(file) {
  if (!file || !existsSync(file)) return []
  return readFileSync(file, 'utf8')
    .split('\n')
    .map((s) => s.trim())
    .filter(Boolean)
}

const ls = (dir) => {
  try {
    return readdirSync(dir)
  } catch {
    return []
  }
}

/**
 * Everything sandboxes of this server left on the host, as readable lines
 * (empty when clean): sandbox directories and libcontainer state under the
 * data dir, cgroups of the given sandboxes in every v1 controller, their
 * network namespaces, veths (by derived name and by bridge membership),
 * mounts under the data dir or of their namespaces, and processes in their
 * cgroups. ids: sandbox IDs to check besides those found in the data dir.
 */
export function hostTraces({ dataDir, bridge, ids = [] }) {
  const traces = []
  const rootDir = join(dataDir, 'runtime')
  const found = new Set(ids)
  for (const sub of ['sandboxes', 'state']) {
    for (const id of ls(join(rootDir, sub))) {
      found.add(id)
      traces.push(`directory ${join(rootDir, sub, id)}`)
    }
  }
  for (const id of ls(join(dataDir, 'network')).filter((f) => f.endsWith('.json'))) {
    traces.push(`network record ${join(dataDir, 'network', id)}`)
  }
  const controllers = ls(CGROUP_ROOT).filter((c) => existsSync(join(CGROUP_ROOT, c, 'cgroup.procs')) || existsSync(join(CGROUP_ROOT, c, CGROUP_PARENT)))
  for (const id of found) {
    for (const c of controllers) {
      const p = join(CGROUP_ROOT, c, CGROUP_PARENT, id)
      if (existsSync(p)) traces.push(`cgroup ${p}`)
    }
    if (existsSync(join(NETNS_DIR, id))) traces.push(`network namespace ${join(NETNS_DIR, id)}`)
    if (bridge) {
      const v = vethName(bridge, id)
      if (existsSync(`/sys/class/net/${v}`)) traces.push(`veth ${v} (sandbox ${id})`)
    }
  }
  if (bridge && existsSync(`/sys/class/net/${bridge}/brif`)) {
    for (const port of ls(`/sys/class/net/${bridge}/brif`)) traces.push(`link ${port} still attached to bridge ${bridge}`)
  }
  const mountinfo = readFileSync('/proc/self/mountinfo', 'utf8').split('\n')
  for (const line of mountinfo) {
    const mountPoint = line.split(' ')[4]
    if (!mountPoint) continue
    if (mountPoint === dataDir || mountPoint.startsWith(`${dataDir}/`)) traces.push(`mount ${mountPoint}`)
    for (const id of found) if (mountPoint === join(NETNS_DIR, id)) traces.push(`mount ${mountPoint}`)
  }
  if (found.size) {
    const want = [...found].map((id) => `/${CGROUP_PARENT}/${id}`)
    for (const pid of ls('/proc').filter((p) => /^\d+$/.test(p))) {
      let cg
      try {
        cg = readFileSync(`/proc/${pid}/cgroup`, 'utf8')
      } catch {
        continue
      }
      const hit = want.find((w) => cg.split('\n').some((l) => l.endsWith(w) || l.includes(`${w}/`)))
      if (hit) traces.push(`process ${pid} in cgroup ${hit}`)
    }
  }
  return [...new Set(traces)]
}

/** Remove a test bridge and its nftables table (the server keeps both when it stops, by design). */
export function teardownNetwork(bridge) {
  if (!bridge || bridge === 'paddock0') throw new Error(`refusing to tear down bridge ${JSON.stringify(bridge)}`)
  const errors = []
  if (existsSync(`/sys/class/net/${bridge}`)) {
    try {
      execFileSync('ip', ['link', 'del', bridge], { stdio: 'pipe' })
    } catch (err) {
      errors.push(`ip link del ${bridge}: ${err.stderr || err.message}`)
    }
  }
  const table = `paddock_${bridge}`
  const tables = execFileSync('nft', ['list', 'tables'], { encoding: 'utf8' })
  if (tables.split('\n').some((l) => l.trim() === `table inet ${table}`)) {
    try {
      execFileSync('nft', ['delete', 'table', 'inet', table], { stdio: 'pipe' })
    } catch (err) {
      errors.push(`nft delete table inet ${table}: ${err.stderr || err.message}`)
    }
  }
  if (errors.length) throw new Error(errors.join('; '))
}

/**
 * Start `paddock serve` and wait until GET /health answers 200 and the
 * start-up memory snapshot self-test (a throwaway sandbox of its own) has
 * finished, so that host inventories taken next do not see it. Returns
 * { proc, url, stdout(), stderr(), exited } where stdout()/stderr() give
 * everything printed so far.
 */
export async function startServe({ bin, dataDir, port, bridge, subnet, extraArgs = [], timeoutMs = 120_000 }) {
  const args = ['serve', '--data-dir', dataDir, '--listen', `127.0.0.1:${port}`, '--bridge', bridge, '--subnet', subnet, ...extraArgs]
  const proc = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  proc.stdout.setEncoding('utf8').on('data', (d) => (out += d))
  proc.stderr.setEncoding('utf8').on('data', (d) => (err += d))
  const exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })))
  let gone = null
  exited.then((v) => (gone = v))
  const url = `http://127.0.0.1:${port}`
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (gone) throw new Error(`paddock serve exited during startup (${JSON.stringify(gone)}): ${err.slice(-2000)}`)
    try {
      const res = await fetch(`${url}/health`)
      const body = await res.text()
      if (res.status === 200) {
        let checks = {}
        try {
          checks = JSON.parse(body).checks ?? {}
        } catch {
          // not JSON: nothing to wait for
        }
        if (checks.memorySnapshots !== 'checking') break
      }
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      proc.kill('SIGKILL')
      throw new Error(`paddock serve did not answer GET /health with 200 within ${timeoutMs} ms: ${err.slice(-2000)}`)
    }
    await sleep(100)
  }
  return { proc, url, args, stdout: () => out, stderr: () => err, exited }
}

/** SIGTERM the server, SIGKILL after graceMs; resolves with its exit status. */
export async function stopServe(server, graceMs = 15_000) {
  if (!server || server.proc.exitCode !== null || server.proc.signalCode !== null) return server && (await server.exited)
  server.proc.kill('SIGTERM')
  const t = setTimeout(() => server.proc.kill('SIGKILL'), graceMs)
  const status = await server.exited
  clearTimeout(t)
  return status
}

/**
 * A suite's own `paddock serve`: a private temporary root (mode 0711) holding
 * a fresh data dir, its own bridge (`<bridgePrefix><pid>`) and subnet.
 * start() starts it and reads the initial API key when the start made one
 * (readKey); restart() stops it, expecting a clean exit, and starts it again
 * on the same data dir; stop(ids) kills the sandboxes left (with the key, the
 * ids given and the listing), stops serve, writes the stderr of every run to
 * logFile, removes the bridge and the root (unless something is still
 * mounted under it: the suite's leak checks report that).
 */
export function serveFixture({ bin, name, bridgePrefix, seed, extraArgs = [], logFile = null, readKey = true }) {
  const logs = [] // stderr of the runs stopped so far
  const fx = {
    bridge: `${bridgePrefix}${process.pid % 100000}`,
    subnet: undefined,
    root: undefined,
    dataDir: undefined,
    server: undefined,
    key: undefined,
    async start() {
      if (process.getuid() !== 0) throw new Error('paddock serve needs root')
      if (!existsSync(bin)) throw new Error(`${bin} not found: run make build`)
      fx.subnet = pickSubnet(process.pid + seed)
      fx.root = mkdtempSync(`/tmp/paddock-sdk-${name}-`)
      chmodSync(fx.root, 0o711)
      fx.dataDir = join(fx.root, 'data')
      fx.server = await startServe({ bin, dataDir: fx.dataDir, port: await freePort(), bridge: fx.bridge, subnet: fx.subnet, extraArgs })
      if (readKey) fx.key = readFileSync(join(fx.dataDir, 'initial-api-key'), 'utf8').trim()
      return fx
    },
    async restart() {
      logs.push(fx.server.stderr())
      const st = await stopServe(fx.server)
      if (st.code !== 0) throw new Error(`serve did not stop cleanly: ${JSON.stringify(st)}`)
      fx.server = await startServe({ bin, dataDir: fx.dataDir, port: await freePort(), bridge: fx.bridge, subnet: fx.subnet, extraArgs })
      return fx.server
    },
    async stop(ids = []) {
      const { server, root } = fx
      try {
        if (server && server.proc.exitCode === null && fx.key) await killAllSandboxes(server.url, fx.key, ids)
      } finally {
        await stopServe(server)
        if (server && logFile) {
          mkdirSync(dirname(logFile), { recursive: true })
          writeFileSync(logFile, logs.join('') + server.stderr())
        }
        try {
          teardownNetwork(fx.bridge)
        } catch {}
        if (root && !readFileSync('/proc/self/mountinfo', 'utf8').includes(` ${root}/`)) rmSync(root, { recursive: true, force: true })
      }
    },
  }
  return fx
}

// ---- CLI for run.sh -------------------------------------------------------

async function main(argv) {
  const [cmd, ...args] = argv
  switch (cmd) {
    case 'free-port':
      console.log(await freePort())
      return 0
    case 'pick-subnet':
      console.log(pickSubnet(args[0] ?? process.pid))
      return 0
    case 'kill-sandboxes': {
      const [apiUrl, keyFile, idsFile] = args
      const key = readFileSync(keyFile, 'utf8').trim()
      const killed = await killAllSandboxes(apiUrl, key, readIds(idsFile))
      console.log(`killed ${killed.length} sandbox(es) left running${killed.length ? `: ${killed.join(' ')}` : ''}`)
      return 0
    }
    case 'check-host': {
      const [dataDir, bridge, idsFile] = args
      const ids = readIds(idsFile)
      const traces = hostTraces({ dataDir, bridge, ids })
      if (traces.length) {
        console.log(`LEFT ON THE HOST after stopping the server (${ids.length} sandboxes were created):`)
        for (const t of traces) console.log(`  ${t}`)
        return 1
      }
      console.log(`host clean: no directory, cgroup, netns, veth, mount or process left by ${ids.length} sandboxes`)
      return 0
    }
    case 'teardown-network':
      teardownNetwork(args[0])
      return 0
    default:
      console.error('usage: serve-host.mjs free-port | pick-subnet <seed> | kill-sandboxes <api-url> <key-file> [ids-file] | check-host <data-dir> <bridge> [ids-file] | teardown-network <bridge>')
      return 2
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err) => {
      console.error(`serve-host: ${err.message}`)
      process.exit(1)
    },
  )
}
