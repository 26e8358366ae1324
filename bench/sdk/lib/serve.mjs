// Starts and stops `paddock serve` for the benchmarks: its own temporary data
// dir, port, bridge and subnet; the base template comes from the machine
// cache. Cleanup kills every sandbox it knows of, stops serve and removes the
// bridge, the nftables table and the data dir.
import { spawn, execFileSync } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'

export async function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
  })
}

export class Serve {
  /**
   * @param {{bin:string, bridge:string, subnet:string, outDir:string, log:(s:string)=>void, extraArgs?:string[], logName?:string}} o
   */
  constructor(o) {
    this.extraArgs = []
    this.logName = 'serve.log'
    Object.assign(this, o)
    this.proc = null
    this.dataDir = null
    this.exited = null
  }

  async start() {
    this.dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'paddock-bench-'))
    this.port = await freePort()
    this.pprofPort = await freePort()
    this.url = `http://127.0.0.1:${this.port}`
    this.pprofUrl = `http://127.0.0.1:${this.pprofPort}`
    this.logPath = path.join(this.outDir, this.logName)
    const logFd = fs.openSync(this.logPath, 'w')
    const args = [
      'serve',
      '--listen', `127.0.0.1:${this.port}`,
      '--data-dir', this.dataDir,
      '--bridge', this.bridge,
      '--subnet', this.subnet,
      // Debug level for the create-phase lines ("sandbox created",
      // "sandbox create phases"); pprof for the profile.
      '--log-level', 'debug',
      '--pprof-listen', `127.0.0.1:${this.pprofPort}`,
      ...this.extraArgs,
    ]
    this.log(`starting ${this.bin} ${args.join(' ')}`)
    this.proc = spawn(this.bin, args, { stdio: ['ignore', logFd, logFd] })
    fs.closeSync(logFd)
    this.exited = new Promise((resolve) => this.proc.once('exit', (code, sig) => resolve({ code, sig })))
    const t0 = Date.now()
    for (;;) {
      if (this.proc.exitCode != null || this.proc.signalCode != null) {
        throw new Error(`paddock serve exited during startup; see ${this.logPath}:\n${tail(this.logPath, 15)}`)
      }
      try {
        const r = await fetch(`${this.url}/health`)
        if (r.status === 200) break
      } catch {}
      if (Date.now() - t0 > 300_000) throw new Error(`paddock serve not healthy after 300 s; see ${this.logPath}`)
      await sleep(200)
    }
    this.apiKey = fs.readFileSync(path.join(this.dataDir, 'initial-api-key'), 'utf8').trim()
    const layers = fs.readdirSync(path.join(this.dataDir, 'layers')).filter((n) => /^[0-9a-f]{64}$/.test(n))
    if (layers.length !== 1) throw new Error(`expected one template layer in ${this.dataDir}/layers, found ${layers.length}`)
    this.layer = path.join(this.dataDir, 'layers', layers[0])
    this.log(`paddock serve healthy on ${this.url} after ${((Date.now() - t0) / 1000).toFixed(1)} s (data ${this.dataDir})`)
  }

  get pid() {
    return this.proc?.pid
  }

  /** Options for the SDK (Sandbox.create and friends). */
  get sdkOpts() {
    return { apiKey: this.apiKey, apiUrl: this.url, sandboxUrl: this.url, requestTimeoutMs: 120_000 }
  }

  async api(method, p, body) {
    const r = await fetch(this.url + p, {
      method,
      headers: { 'X-API-KEY': this.apiKey, ...(body ? { 'Content-Type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    })
    const text = await r.text()
    return { status: r.status, body: text ? JSON.parse(text) : null }
  }

  /** IDs of every sandbox serve lists (all pages). */
  async listIds() {
    const ids = []
    let token = ''
    for (;;) {
      const r = await fetch(`${this.url}/v2/sandboxes?limit=100${token ? `&nextToken=${encodeURIComponent(token)}` : ''}`, {
        headers: { 'X-API-KEY': this.apiKey },
      })
      if (r.status !== 200) throw new Error(`list sandboxes: status ${r.status}`)
      for (const s of await r.json()) ids.push(s.sandboxID)
      token = r.headers.get('x-next-token') || ''
      if (!token) return ids
    }
  }

  async stop() {
    if (!this.proc) return
    try {
      const ids = await this.listIds()
      if (ids.length) this.log(`cleanup: killing ${ids.length} sandboxes`)
      for (let i = 0; i < ids.length; i += 8) {
        await Promise.all(ids.slice(i, i + 8).map((id) => this.api('DELETE', `/sandboxes/${id}`).catch(() => {})))
      }
    } catch (e) {
      this.log(`cleanup: listing sandboxes failed: ${e.message}`)
    }
    this.proc.kill('SIGTERM')
    const t = setTimeout(() => this.proc.kill('SIGKILL'), 15_000)
    await this.exited
    clearTimeout(t)
    this.proc = null
    teardownNetwork(this.bridge, this.log)
    removeDataDir(this.dataDir, this.log)
  }
}

function tail(file, n) {
  try {
    return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-n).join('\n')
  } catch {
    return ''
  }
}

/** Removes the bench bridge and its nftables table (serve leaves them for the next start). */
export function teardownNetwork(bridge, log) {
  try {
    execFileSync('ip', ['link', 'del', bridge], { stdio: 'ignore' })
  } catch {}
  try {
    const tables = execFileSync('nft', ['list', 'tables'], { encoding: 'utf8' })
    const name = `paddock_${bridge}`
    if (tables.split('\n').some((l) => l.trim() === `table inet ${name}`)) {
      execFileSync('nft', ['delete', 'table', 'inet', name])
    }
  } catch (e) {
    log(`cleanup: nft: ${e.message}`)
  }
}

/** Removes the data dir unless something is still mounted below it. */
export function removeDataDir(dir, log) {
  if (!dir) return
  const mounted = fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((l) => l.split(' ')[4]?.startsWith(dir + '/'))
  if (mounted.length) {
    log(`cleanup: ${mounted.length} mounts left under ${dir}; leaving it in place`)
    return
  }
  fs.rmSync(dir, { recursive: true, force: true })
}
