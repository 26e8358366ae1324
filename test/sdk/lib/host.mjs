// Host side of the isolation and robustness suites (isolation.test.mjs,
// robustness.test.mjs): a `paddock serve` the tests own (they SIGKILL and
// restart it), an inventory of what this server's sandboxes hold on the host
// (mounts, cgroups, veths, processes, network namespaces, files, nftables
// elements), a look at one sandbox from the host (its envd's host PID, its
// cgroup files), a stand-in "internet" in a network namespace of its own, and
// a commands.run that returns instead of throwing on a non-zero exit.
//
// run.sh (suite `host`) sets PADDOCK_HOST_WORK, _PORT, _BRIDGE, _SUBNET and
// PADDOCK_BIN so both files share one data dir; without them a file picks its
// own and cleans up after itself. Everything here runs as root.
import assert from 'node:assert/strict'
import { execFileSync, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { chmodSync, closeSync, existsSync, mkdtempSync, openSync, readdirSync, readFileSync, readlinkSync, realpathSync, rmSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { CommandExitError } from 'e2b'
import { CGROUP_PARENT, NETNS_DIR, freePort, hostTraces, killAllSandboxes, pickSubnet, teardownNetwork, vethName } from './serve-host.mjs'
import { sleep } from './util.mjs'

const here = fileURLToPath(new URL('.', import.meta.url))
const CGROUP_ROOT = '/sys/fs/cgroup'
export const ID_RE = /^i[a-z0-9]{20}$/

/** Fail loudly (not skip) when the suites cannot run here. */
export function requireRoot() {
  assert.equal(process.getuid?.(), 0, 'the isolation and robustness suites need root (paddock serve, /proc, /sys, netns)')
  for (const tool of ['ip', 'nft']) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'pipe' })
    } catch {
      assert.fail(`${tool} is missing on this host (scripts/setup.sh installs it)`)
    }
  }
}

/**
 * Where and how this file's server runs: from run.sh's environment, or a
 * fresh temp dir, free port, own bridge and /24 (then owned = true: the
 * caller tears the bridge and data dir down at the end).
 */
export async function hostConfig() {
  const env = process.env
  const owned = !env.PADDOCK_HOST_WORK
  const workDir = env.PADDOCK_HOST_WORK || mkdtempSync('/tmp/paddock-sdk-host.')
  // Sandboxes' user namespaces walk this path to their root filesystems.
  chmodSync(workDir, 0o711)
  const bin = resolve(env.PADDOCK_BIN || join(here, '../../../bin/paddock'))
  return {
    owned,
    bin,
    workDir,
    dataDir: join(workDir, 'data'),
    port: Number(env.PADDOCK_HOST_PORT || (await freePort())),
    bridge: env.PADDOCK_HOST_BRIDGE || `pdhost${process.pid % 100000}`,
    subnet: env.PADDOCK_HOST_SUBNET || pickSubnet(process.pid + 17),
    log: join(workDir, 'serve.log'),
    pidFile: join(workDir, 'serve.pid'),
  }
}

/**
 * One `paddock serve` on cfg's data dir, listening on 0.0.0.0:port (so the
 * control-plane port is really open on every host address: the isolation
 * tests show it is reachable from the host and not from a sandbox). start()
 * points the SDK (E2B_API_URL, E2B_SANDBOX_URL, E2B_API_KEY) at it.
 */
export class HostServer {
  constructor(cfg) {
    this.cfg = cfg
    this.proc = null
    this.exited = null
    this.url = `http://127.0.0.1:${cfg.port}`
    this.key = ''
  }

  get pid() {
    return this.proc?.pid
  }

  running() {
    return !!this.proc && this.proc.exitCode === null && this.proc.signalCode === null
  }

  async start({ timeoutMs = 900_000 } = {}) {
    assert.ok(!this.running(), 'server already running')
    assert.ok(existsSync(this.cfg.bin), `${this.cfg.bin} not found: run 'make build' first`)
    const c = this.cfg
    const args = ['serve', '--data-dir', c.dataDir, '--listen', `0.0.0.0:${c.port}`, '--bridge', c.bridge, '--subnet', c.subnet]
    const fd = openSync(c.log, 'a')
    writeFileSync(fd, `\n==== ${new Date().toISOString()} ${c.bin} ${args.join(' ')}\n`)
    // Own process group: a Ctrl-C of the runner does not reach it; the exit
    // hook below and run.sh stop it.
    const proc = spawn(c.bin, args, { stdio: ['ignore', fd, fd], detached: true })
    closeSync(fd)
    this.proc = proc
    this.exited = new Promise((res) => proc.once('exit', (code, signal) => res({ code, signal })))
    writeFileSync(c.pidFile, `${proc.pid}\n`)
    stopOnExit(this)
    const deadline = Date.now() + timeoutMs
    for (;;) {
      if (!this.running()) throw new Error(`paddock serve exited during startup (${JSON.stringify(await this.exited)}); log ${c.log}:\n${tail(c.log)}`)
      try {
        const res = await fetch(`${this.url}/health`, { signal: AbortSignal.timeout(5000) })
        const body = await res.text()
        // Healthy, and the start-up memory snapshot self-test (a throwaway
        // sandbox) is over, so that inventories taken next do not see it.
        if (res.status === 200 && JSON.parse(body).checks?.memorySnapshots !== 'checking') break
        if (res.status !== 503 && res.status !== 200) throw new Error(`GET /health: ${res.status} ${body}`)
      } catch (err) {
        if (String(err.message).startsWith('GET /health')) throw err
      }
      if (Date.now() > deadline) throw new Error(`paddock serve not healthy within ${timeoutMs} ms; log ${c.log}:\n${tail(c.log)}`)
      await sleep(100)
    }
    this.key = readFileSync(join(c.dataDir, 'initial-api-key'), 'utf8').trim()
    assert.match(this.key, /^e2b_[0-9a-f]{40}$/, 'initial-api-key')
    process.env.E2B_API_URL = this.url
    process.env.E2B_SANDBOX_URL = this.url
    process.env.E2B_API_KEY = this.key
    delete process.env.E2B_DEBUG
    delete process.env.E2B_DOMAIN
    return this
  }

  /** SIGKILL the server (its sandboxes keep running) and wait until it is gone. */
  async kill9() {
    assert.ok(this.running(), 'server not running')
    process.kill(this.proc.pid, 'SIGKILL')
    return this.exited
  }

  /** SIGTERM, then SIGKILL after graceMs. */
  async stop(graceMs = 15_000) {
    if (!this.running()) return this.exited
    this.proc.kill('SIGTERM')
    const t = setTimeout(() => this.running() && this.proc.kill('SIGKILL'), graceMs)
    const status = await this.exited
    clearTimeout(t)
    return status
  }

  /** Kill every sandbox of this server through the API; returns their IDs. */
  async killAll() {
    return killAllSandboxes(this.url, this.key)
  }
}

const live = new Set()
let hooked = false
function stopOnExit(server) {
  live.add(server)
  if (hooked) return
  hooked = true
  process.on('exit', () => {
    for (const s of live) if (s.running()) s.proc.kill('SIGTERM')
  })
}

/**
 * End of a test file: kill every sandbox, stop the server, and when this
 * file made its own environment, remove the bridge, nftables table and data
 * dir (run.sh does that for the shared one).
 */
export async function shutdown(server) {
  const errors = []
  if (server && !server.running() && existsSync(join(server.cfg.dataDir, 'initial-api-key'))) {
    // A test left it down (e.g. failed between a SIGKILL and the restart):
    // start it again on the same data dir to kill what is left.
    await server.start().catch((err) => errors.push(`restart to clean up: ${err.message}`))
  }
  if (server?.running()) {
    await server.killAll().catch((err) => errors.push(`kill sandboxes: ${err.message}`))
    await server.stop()
  }
  if (server?.cfg.owned) {
    const c = server.cfg
    try {
      teardownNetwork(c.bridge)
    } catch (err) {
      errors.push(err.message)
    }
    if (readFileSync('/proc/self/mountinfo', 'utf8').includes(` ${c.workDir}/`)) errors.push(`mounts remain under ${c.workDir}; left in place`)
    else rmSync(c.workDir, { recursive: true, force: true })
  }
  if (errors.length) throw new Error(errors.join('; '))
}

export function tail(file, lines = 40) {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n')
  } catch (err) {
    return `(cannot read ${file}: ${err.message})`
  }
}

// ---- what sandboxes hold on the host -------------------------------------

const ls = (dir) => {
  try {
    return readdirSync(dir)
  } catch {
    return []
  }
}
const readOr = (path, dflt = '') => {
  try {
    return readFileSync(path, 'utf8')
  } catch {
    return dflt
  }
}

/** Sandbox IDs with any trace in the data dir (runtime dirs, libcontainer state, network records). */
export function idsOnDisk(dataDir) {
  const ids = new Set()
  for (const sub of ['runtime/sandboxes', 'runtime/state']) for (const n of ls(join(dataDir, sub))) if (ID_RE.test(n)) ids.add(n)
  for (const n of ls(join(dataDir, 'network'))) {
    const id = n.replace(/\.json$/, '')
    if (n.endsWith('.json') && ID_RE.test(id)) ids.add(id)
  }
  return ids
}

function nftTable(bridge) {
  return bridge === 'paddock0' ? 'paddock' : `paddock_${bridge}`
}

/** Addresses in the server's internet_addrs nftables set (sandboxes allowed egress). */
export function nftInternetElements(bridge) {
  let out
  try {
    out = execFileSync('nft', ['-j', 'list', 'set', 'inet', nftTable(bridge), 'internet_addrs'], { encoding: 'utf8', stdio: 'pipe' })
  } catch {
    return [] // no table yet
  }
  const set = JSON.parse(out).nftables.find((x) => x.set)?.set
  return (set?.elem ?? []).map((e) => (typeof e === 'string' ? e : JSON.stringify(e)))
}

const ownMntNs = (() => {
  try {
    return readlinkSync('/proc/self/ns/mnt')
  } catch {
    return ''
  }
})()

/**
 * Whether a process lives in a sandbox of this data dir: another mount
 * namespace whose root is an overlay with its layers under dataDir.
 * (/proc/<pid>/root reads "/" for a pivoted container, so look at its mounts.)
 */
function rootedIn(pid, dataDir) {
  let ns = ''
  try {
    ns = readlinkSync(`/proc/${pid}/ns/mnt`)
  } catch {
    return false
  }
  if (ns === ownMntNs) return false
  const root = readOr(`/proc/${pid}/mountinfo`)
    .split('\n')
    .find((l) => l.split(' ')[4] === '/')
  return !!root && root.includes(`${dataDir}/`)
}

function procInfo(pid) {
  const cmdline = readOr(`/proc/${pid}/cmdline`).split('\0').filter(Boolean)
  const stat = readOr(`/proc/${pid}/stat`)
  const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
  return { pid: Number(pid), cmdline, ppid, cgroup: readOr(`/proc/${pid}/cgroup`) }
}

/**
 * Everything this server's sandboxes hold on the host, by kind, for the
 * given IDs plus every ID found in the data dir:
 *   mounts     mount points under the data dir, and the IDs' netns binds
 *   cgroups    /sys/fs/cgroup/<ctrl>/paddock/<id>
 *   veths      links on the bridge, and the IDs' derived veth names
 *   processes  in the IDs' cgroups, with a root filesystem from the data dir
 *              (envd and everything it started), or an orphaned `paddock init`
 *   netns      /run/paddock/netns/<id>
 *   files      runtime/sandboxes/*, runtime/state/*, network/*.json
 *   nft        elements of the internet_addrs set
 * Each kind is a sorted list of readable strings.
 */
export function inventory({ dataDir, bridge, bin }, ids = []) {
  const all = new Set([...ids, ...idsOnDisk(dataDir)])
  const inv = { mounts: [], cgroups: [], veths: [], processes: [], netns: [], files: [], nft: [] }
  const netnsMounts = new Set([...all].map((id) => join(NETNS_DIR, id)))
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const mp = line.split(' ')[4]
    if (mp && (mp.startsWith(`${dataDir}/`) || netnsMounts.has(mp))) inv.mounts.push(mp)
  }
  const controllers = ls(CGROUP_ROOT).filter((c) => existsSync(join(CGROUP_ROOT, c, CGROUP_PARENT)))
  for (const id of all) {
    for (const c of controllers) {
      const p = join(CGROUP_ROOT, c, CGROUP_PARENT, id)
      if (existsSync(p)) inv.cgroups.push(p)
    }
    if (existsSync(join(NETNS_DIR, id))) inv.netns.push(join(NETNS_DIR, id))
    const v = vethName(bridge, id)
    if (existsSync(`/sys/class/net/${v}`)) inv.veths.push(v)
  }
  for (const port of ls(`/sys/class/net/${bridge}/brif`)) inv.veths.push(port)
  const binReal = (() => {
    try {
      return realpathSync(bin)
    } catch {
      return bin
    }
  })()
  const cgWant = [...all].map((id) => `/${CGROUP_PARENT}/${id}`)
  for (const pid of ls('/proc').filter((p) => /^\d+$/.test(p))) {
    if (Number(pid) === process.pid) continue
    const p = procInfo(pid)
    if (!p.cmdline.length && !p.cgroup) continue // gone, or a kernel thread
    const inCg = cgWant.find((w) => p.cgroup.split('\n').some((l) => l.endsWith(w) || l.includes(`${w}/`)))
    const rooted = !inCg && rootedIn(pid, dataDir)
    let orphanInit = false
    if (p.cmdline[1] === 'init' && p.ppid === 1) {
      let exe = ''
      try {
        exe = readlinkSync(`/proc/${pid}/exe`).replace(/ \(deleted\)$/, '')
      } catch {}
      orphanInit = exe === binReal || exe === bin
    }
    if (inCg || rooted || orphanInit) {
      const why = inCg ? `cgroup ${inCg}` : rooted ? 'root filesystem in the data dir' : 'orphaned paddock init'
      inv.processes.push(`${pid} ${p.cmdline.join(' ').slice(0, 80)} (${why})`)
    }
  }
  for (const sub of ['runtime/sandboxes', 'runtime/state']) for (const n of ls(join(dataDir, sub))) inv.files.push(join(dataDir, sub, n))
  for (const n of ls(join(dataDir, 'network'))) if (n.endsWith('.json')) inv.files.push(join(dataDir, 'network', n))
  inv.nft = nftInternetElements(bridge)
  for (const k of Object.keys(inv)) inv[k] = [...new Set(inv[k])].sort()
  return inv
}

/**
 * The inventory entries that belong to the given IDs (by path, cgroup or
 * derived veth name), as "kind: entry" lines; for checking some sandboxes
 * while others still run. (Processes found only by their root filesystem and
 * nftables addresses name no ID: assertClean covers those.)
 */
export function tracesOf(cfg, ids) {
  const veths = new Set(ids.map((id) => vethName(cfg.bridge, id)))
  const out = []
  for (const [k, v] of Object.entries(inventory(cfg, ids))) {
    for (const x of v) if (ids.some((id) => x.includes(id)) || (k === 'veths' && veths.has(x))) out.push(`${k}: ${x}`)
  }
  return out
}

/** Counts per kind of an inventory, e.g. { mounts: 0, cgroups: 0, ... }. */
export function counts(inv) {
  return Object.fromEntries(Object.entries(inv).map(([k, v]) => [k, v.length]))
}

/** Assert nothing of this server's sandboxes (and of ids) is left on the host. */
export function assertClean(cfg, ids = [], what = 'host') {
  const inv = inventory(cfg, ids)
  const left = Object.entries(inv).flatMap(([k, v]) => v.map((x) => `${k}: ${x}`))
  // serve-host's view as well (bridge ports, directories, processes in cgroups).
  const traces = hostTraces({ dataDir: cfg.dataDir, bridge: cfg.bridge, ids })
  const all = [...new Set([...left, ...traces])]
  assert.deepEqual(all, [], `${what}: left behind on the host:\n  ${all.join('\n  ')}`)
  return inv
}

// ---- one sandbox seen from the host --------------------------------------

/** Read a cgroup v1 file of a sandbox, e.g. cgroupFile(id, 'pids', 'pids.max'). */
export function cgroupFile(id, controller, file) {
  return readFileSync(join(CGROUP_ROOT, controller, CGROUP_PARENT, id, file), 'utf8').trim()
}

/** Host PIDs of a sandbox's processes (its pids cgroup). */
export function sandboxPids(id) {
  return readOr(join(CGROUP_ROOT, 'pids', CGROUP_PARENT, id, 'cgroup.procs'))
    .split('\n')
    .filter(Boolean)
    .map(Number)
}

/**
 * The sandbox's PID 1 (envd) as seen from the host: { pid, start } (start
 * time in clock ticks, so a restarted envd with a reused PID differs), or
 * null when it does not run.
 */
export function envdOnHost(id) {
  for (const pid of sandboxPids(id)) {
    const status = readOr(`/proc/${pid}/status`)
    const nspid = status.match(/^NSpid:\s+(.*)$/m)?.[1].trim().split(/\s+/)
    if (!nspid || nspid[nspid.length - 1] !== '1') continue
    const stat = readOr(`/proc/${pid}/stat`)
    const start = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]
    const cmd = readOr(`/proc/${pid}/cmdline`).split('\0').join(' ')
    return { pid, start, cmd }
  }
  return null
}

/** Host processes whose command line contains needle (excluding this one). */
export function hostProcessesMatching(needle) {
  const out = []
  for (const pid of ls('/proc').filter((p) => /^\d+$/.test(p))) {
    if (Number(pid) === process.pid) continue
    const cmd = readOr(`/proc/${pid}/cmdline`).split('\0').join(' ')
    if (cmd.includes(needle)) out.push({ pid: Number(pid), cmd })
  }
  return out
}

/** This host's IPv4 addresses (not loopback), e.g. [{ dev: 'eth0', addr: '10.0.0.5' }]. */
export function hostIPv4() {
  const links = JSON.parse(execFileSync('ip', ['-j', '-4', 'addr', 'show'], { encoding: 'utf8' }))
  const out = []
  for (const l of links) for (const a of l.addr_info ?? []) if (a.family === 'inet' && !a.local.startsWith('127.')) out.push({ dev: l.ifname, addr: a.local })
  return out
}

/** The source address of this host's default route (its primary IP), or the first non-loopback address. */
export function primaryIPv4() {
  try {
    const r = JSON.parse(execFileSync('ip', ['-j', '-4', 'route', 'get', '192.0.2.1'], { encoding: 'utf8', stdio: 'pipe' }))
    if (r[0]?.prefsrc) return r[0].prefsrc
  } catch {}
  const any = hostIPv4().find((a) => !a.dev.startsWith('pd'))
  assert.ok(any, 'this host has no IPv4 address besides loopback')
  return any.addr
}

/** The address of the server's bridge (the sandboxes' gateway). */
export function bridgeAddress(bridge) {
  const a = hostIPv4().find((x) => x.dev === bridge)
  assert.ok(a, `bridge ${bridge} has no IPv4 address`)
  return a.addr
}

// ---- inside a sandbox -------------------------------------------------------

/**
 * commands.run that resolves with { exitCode, stdout, stderr, error } for
 * any exit status (a command killed by a signal has exitCode -1 and error
 * "signal: killed"); other failures still throw.
 */
export async function sh(sbx, cmd, opts = {}) {
  try {
    const r = await sbx.commands.run(cmd, opts)
    return { exitCode: r.exitCode, stdout: r.stdout, stderr: r.stderr, error: r.error }
  } catch (err) {
    if (err instanceof CommandExitError) return { exitCode: err.exitCode, stdout: err.stdout, stderr: err.stderr, error: err.error }
    throw err
  }
}

/** Run cmd in the sandbox and require exit 0; returns stdout. */
export async function ok(sbx, cmd, opts = {}) {
  const r = await sh(sbx, cmd, opts)
  assert.equal(r.exitCode, 0, `\`${cmd.slice(0, 200)}\` exited ${r.exitCode} (${r.error ?? ''}): ${r.stderr.slice(-500)}`)
  return r.stdout
}

/** Median and max of a list of numbers (ms). */
export function stats(xs) {
  const s = [...xs].sort((a, b) => a - b)
  const q = (p) => s[Math.min(s.length - 1, Math.floor(p * s.length))]
  return { n: s.length, median: s.length ? q(0.5) : NaN, p99: s.length ? q(0.99) : NaN, max: s.length ? s[s.length - 1] : NaN }
}

// ---- a stand-in internet ------------------------------------------------------

/**
 * An HTTP server in a network namespace of its own, reached from the host
 * through a veth (198.18.x.0/24, the benchmarking range, never a sandbox
 * subnet): to a sandbox it is "the internet", reached only through the
 * host's NAT, deterministic and local. GET / answers `token`.
 */
export class FakeInternet {
  constructor() {
    const n = randomBytes(2).readUInt16BE(0)
    this.tag = n.toString(16).padStart(4, '0')
    this.ns = `pdinet-${this.tag}`
    this.hostIf = `pdinh${this.tag}`
    this.nsIf = `pdini${this.tag}`
    const k = 100 + (n % 150)
    this.hostAddr = `198.18.${k}.1`
    this.addr = `198.18.${k}.2`
    this.port = 8080
    this.token = `paddock-inet-${randomBytes(6).toString('hex')}`
    this.proc = null
  }

  get url() {
    return `http://${this.addr}:${this.port}/`
  }

  async start() {
    const ip = (...args) => execFileSync('ip', args, { stdio: 'pipe' })
    ip('netns', 'add', this.ns)
    ip('link', 'add', this.hostIf, 'type', 'veth', 'peer', 'name', this.nsIf)
    ip('link', 'set', this.nsIf, 'netns', this.ns)
    ip('addr', 'add', `${this.hostAddr}/24`, 'dev', this.hostIf)
    ip('link', 'set', this.hostIf, 'up')
    ip('-n', this.ns, 'addr', 'add', `${this.addr}/24`, 'dev', this.nsIf)
    ip('-n', this.ns, 'link', 'set', this.nsIf, 'up')
    ip('-n', this.ns, 'link', 'set', 'lo', 'up')
    const code = `require('http').createServer((q, s) => s.end(${JSON.stringify(this.token)})).listen(${this.port}, ${JSON.stringify(this.addr)}, () => console.log('ready'))`
    this.proc = spawn('ip', ['netns', 'exec', this.ns, process.execPath, '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] })
    await new Promise((res, rej) => {
      this.proc.stdout.once('data', res)
      this.proc.once('exit', (c) => rej(new Error(`fake internet server exited (${c})`)))
    })
  }

  async stop() {
    if (this.proc && this.proc.exitCode === null) {
      this.proc.kill('SIGKILL')
      await new Promise((res) => this.proc.once('exit', res))
    }
    for (const args of [
      ['link', 'del', this.hostIf],
      ['netns', 'del', this.ns],
    ]) {
      try {
        execFileSync('ip', args, { stdio: 'pipe' })
      } catch {}
    }
  }
}

// ---- CLI for run.sh -------------------------------------------------------------

/**
 * `node lib/host.mjs cleanup` (environment as for the suites): stop a server
 * the suites left running, and if sandboxes remain in the data dir, start it
 * once more to kill them through the API. Exits non-zero if it had to act.
 */
async function cleanupCli() {
  const cfg = await hostConfig()
  assert.ok(!cfg.owned, 'cleanup needs PADDOCK_HOST_WORK')
  let acted = false
  const pid = Number(readOr(cfg.pidFile).trim())
  if (pid && readOr(`/proc/${pid}/cmdline`).split('\0').join(' ').includes(`serve --data-dir ${cfg.dataDir}`)) {
    console.error(`host cleanup: stopping the paddock serve left running (pid ${pid})`)
    acted = true
    process.kill(pid, 'SIGTERM')
    for (let i = 0; i < 150 && existsSync(`/proc/${pid}`); i++) await sleep(100)
    if (existsSync(`/proc/${pid}`)) process.kill(pid, 'SIGKILL')
    await sleep(200)
  }
  const left = idsOnDisk(cfg.dataDir)
  if (left.size && existsSync(join(cfg.dataDir, 'initial-api-key'))) {
    console.error(`host cleanup: ${left.size} sandbox(es) left in ${cfg.dataDir}; restarting the server to kill them`)
    acted = true
    const server = new HostServer({ ...cfg, owned: false })
    await server.start()
    const killed = await server.killAll()
    await server.stop()
    console.error(`host cleanup: killed ${killed.length}`)
  }
  return acted ? 1 : 0
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const [cmd] = process.argv.slice(2)
  const run = cmd === 'cleanup' ? cleanupCli() : Promise.reject(new Error('usage: host.mjs cleanup'))
  run.then(
    (code) => process.exit(code),
    (err) => {
      console.error(`host.mjs: ${err.message}`)
      process.exit(2)
    },
  )
}
