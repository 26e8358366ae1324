// The benchmark report: create-phase breakdown from serve's debug log, the
// results table with baselines and ratios, and the issue's targets.
import fs from 'node:fs'
import { summarize, fmtMs, fmtNum } from './stats.mjs'

/** Parses a Go time.Duration string ("1.5ms", "750µs", "2.1s", "1m2s") into ms. */
export function parseDuration(s) {
  const units = { ns: 1e-6, us: 1e-3, 'µs': 1e-3, 'μs': 1e-3, ms: 1, s: 1000, m: 60000, h: 3600000 }
  let total = 0
  const re = /([0-9.]+)(ns|us|µs|μs|ms|s|m|h)/g
  let m, seen = false
  while ((m = re.exec(s))) {
    total += Number(m[1]) * units[m[2]]
    seen = true
  }
  return seen ? total : NaN
}

function parseLine(line) {
  const out = {}
  const re = /(\w+)=("(?:[^"\\]|\\.)*"|\S+)/g
  let m
  while ((m = re.exec(line))) out[m[1]] = m[2].startsWith('"') ? JSON.parse(m[2]) : m[2]
  return out
}

const runtimeKeys = ['overlay', 'network', 'networkWait', 'config', 'container', 'envdListen']
const serviceKeys = ['resolve', 'recordWrite', 'runtime', 'envd', 'init', 'update', 'total']

/**
 * Create-path phases from serve's debug log, for the sandboxes in ids (all
 * when ids is empty): per phase, a summary over the sandboxes.
 */
export function parsePhases(text, ids) {
  const per = {} // id → {phase: ms}
  for (const line of text.split('\n')) {
    if (!line.includes('msg="sandbox created"') && !line.includes('msg="sandbox create phases"')) continue
    const kv = parseLine(line)
    if (!kv.sandbox || (ids.size && !ids.has(kv.sandbox))) continue
    const keys = kv.msg === 'sandbox create phases' ? serviceKeys : kv.component === 'runtime/local' ? runtimeKeys : []
    for (const k of keys) if (kv[k] != null) (per[kv.sandbox] ??= {})[k] = parseDuration(kv[k])
  }
  const all = Object.values(per).filter((p) => p.total != null && p.container != null)
  if (all.length === 0) return null
  const col = (f) => summarize(all.map(f).filter((v) => !Number.isNaN(v)))
  const phases = [
    ['template resolve', col((p) => p.resolve)],
    ['record write (creating), alongside runtime.Create (not in the total)', col((p) => p.recordWrite)],
    ['runtime.Create: meta.json + overlay mount', col((p) => p.overlay)],
    ['runtime.Create: network attach (netns, veth, addr, route), alongside the overlay mount (not in the total)', col((p) => p.network)],
    ['runtime.Create: waiting for the network after the overlay', col((p) => p.networkWait ?? p.network)],
    ['runtime.Create: /etc files, sysfs, libcontainer config (seccomp)', col((p) => p.config)],
    ['runtime.Create: libcontainer Create + Run (envd exec)', col((p) => p.container)],
    ['runtime.Create: envd start, until its notice that it listens', col((p) => p.envdListen ?? NaN)],
    ['runtime.Create: rest (checks, sandbox dir, log file)', col((p) => p.runtime - p.overlay - (p.networkWait ?? p.network) - p.config - p.container - (p.envdListen ?? 0))],
    ['envd ready (first /health 204; before envd sent its notice, all of its start)', col((p) => p.envd)],
    ['POST /init', col((p) => p.init)],
    ['record update (running)', col((p) => p.update)],
    ['sandbox.Service.Create total', col((p) => p.total)],
  ]
  return { n: all.length, phases }
}

const isLatency = (r) => r.unit === 'ms'
const isThroughput = (r) => r.unit === 'MiB/s' || r.unit === 'req/s'
const val = (x) => (x == null ? null : typeof x === 'number' ? x : x.p50)

function ratioText(r) {
  const p = val(r.paddock), b = val(r.baseline)
  if (p == null || b == null || !b) return '–'
  if (isThroughput(r)) return `${((p / b) * 100).toFixed(0)}%`
  return `${(p / b).toFixed(2)}×`
}

function cell(r, x, which) {
  if (x == null) return '–'
  if (typeof x === 'number') {
    if (which !== 'p50') return ''
    if (r.unit === 'count') return String(Math.round(x))
    if (r.unit === 'x') return `${x.toFixed(2)}×`
    return `${fmtNum(x, x >= 100 ? 0 : 1)} ${r.unit}`
  }
  return fmtMs(x[which])
}

function find(rows, key) {
  return rows.find((r) => r.key === key)
}

/**
 * The E2B floor of create→usable: the libcontainer floor (which runs `true`
 * as the container's process and as its command) plus what E2B's contract
 * itself adds, each measured in the same run: the SDK's own cost (client),
 * an in-sandbox agent process that listens, started where the floor starts
 * `true` (agent), and the SDK's command `bash -l -c true` where the floor
 * runs `true` (shell). Null when a part was not measured.
 */
function e2bFloor(rows, cu, client) {
  const guest = find(rows, 'create.guestenvdstart'), exec = find(rows, 'create.envdstart')
  const root = find(rows, 'commands.root'), cmd = find(rows, 'commands.true')
  if (!guest?.paddock || !exec?.baseline || !root?.baseline || !cmd?.baseline) return null
  const agent = Math.max(0, guest.paddock.p50 - exec.baseline.p50)
  const shell = Math.max(0, root.baseline.p50 - cmd.baseline.p50)
  return { agent, shell, total: cu.baseline.p50 + client + agent + shell }
}

/** The issue's targets, each with the measurement and met/missed. */
function targets(rows, extra) {
  const out = []
  const t = (target, measured, ok) => out.push({ target, measured, met: ok == null ? 'not measured' : ok ? 'met' : 'missed' })
  const cu = find(rows, 'create.usable')
  if (cu) {
    const r = val(cu.paddock) / val(cu.baseline)
    t('create→usable p50 ≤ 1.3× floor (libcontainer create+start+first command)', `${fmtMs(cu.paddock.p50)} vs floor ${fmtMs(cu.baseline.p50)} = ${r.toFixed(2)}×`, r <= 1.3)
    t('create→usable p50 ≤ 50 ms (cold)', fmtMs(cu.paddock.p50), cu.paddock.p50 <= 50)
    t('create→usable p99 ≤ 120 ms (cold)', fmtMs(cu.paddock.p99), cu.paddock.p99 <= 120)
  } else t('create→usable (cold)', '–', null)
  const pf = find(rows, 'pool.floor'), cf = find(rows, 'commands.floor')
  if (cu && pf?.baseline && cf?.baseline) {
    // The floor has no client: take out what the SDK itself costs here.
    const client = pf.baseline.p50 + cf.baseline.p50
    const r = (cu.paddock.p50 - client) / cu.baseline.p50
    t('(context) create→usable less the client\'s own cost (the SDK\'s create + commands.run against the stand-in) ≤ 1.3× floor', `${fmtMs(cu.paddock.p50)} − ${fmtMs(client)} = ${fmtMs(cu.paddock.p50 - client)} vs floor ${fmtMs(cu.baseline.p50)} = ${r.toFixed(2)}×`, r <= 1.3)
    const e2b = e2bFloor(rows, cu, client)
    if (e2b) {
      // Where the 1.3× bar is below what any E2B-compatible sandbox must
      // do, the issue asks for the proof and the next best target.
      const re = e2b.total / cu.baseline.p50
      out.push({
        target: `(proof) the E2B floor: the libcontainer floor plus what E2B's contract adds and no server can skip: the client's own ${fmtMs(client)}, an agent started in place of \`true\` (+${fmtMs(e2b.agent)}: paddock-guest envd until it accepts − exec of \`true\`, host) and \`bash -l -c true\` in place of \`true\` (+${fmtMs(e2b.shell)}, host)`,
        measured: `${fmtMs(e2b.total)} = ${re.toFixed(2)}× the floor, before any step of Paddock's own (network, records, proxy)`,
        met: re > 1.3 ? '1.3× the floor is out of reach' : '1.3× the floor is within reach',
      })
      const rn = cu.paddock.p50 / e2b.total
      t('(next best) create→usable p50 ≤ 1.3× the E2B floor', `${fmtMs(cu.paddock.p50)} vs ${fmtMs(e2b.total)} = ${rn.toFixed(2)}×`, rn <= 1.3)
    }
  }
  // Beside each: the client's floor, the same SDK call against a stand-in
  // that answers at once (pbench apistub); what is above it is the server's.
  const withFloor = (f, what) => (f?.baseline ? [`the SDK against ${what}: ${fmtMs(f.baseline.p50)}, so Paddock's share is ${fmtMs(f.paddock.p50 - f.baseline.p50)}`] : [])
  const paren = (parts) => (parts.length ? ` (${parts.join('; ')})` : '')
  const pc = find(rows, 'pool.create')
  t('warm pool: create p50 ≤ 5 ms', pc?.paddock
    ? `${fmtMs(pc.paddock.p50)}${paren([`p99 ${fmtMs(pc.paddock.p99)}`, `cold ${fmtMs(pc.baseline?.p50)}`, ...withFloor(pf, 'a stand-in answering at once')])}`
    : 'not measured (BENCH_ONLY without pool)', pc?.paddock ? pc.paddock.p50 <= 5 : null)
  const cmd = find(rows, 'commands.true'), hb = find(rows, 'commands.hostbash')
  t('commands.run("true") through the proxy p50 ≤ 5 ms', cmd
    ? `${fmtMs(cmd.paddock.p50)}${paren([...withFloor(cf, 'a stand-in envd whose process ends at once'), ...(hb ? [`host fork+exec of \`bash -c true\`: ${fmtMs(hb.paddock.p50)}`] : [])])}`
    : '–', cmd ? cmd.paddock.p50 <= 5 : null)
  if (extra.proxy) {
    t('proxy overhead ≤ 0.5 ms p50 (process.Start `/bin/true`, streamed, proxy − direct)', `${fmtMs(extra.proxy.exec)} (a bare TCP relay: ${fmtMs(extra.proxy.relayExec)})`, extra.proxy.exec <= 0.5)
    t('proxy overhead ≤ 0.5 ms p50 (process.List, unary, proxy − direct)', `${fmtMs(extra.proxy.list)} (a bare TCP relay: ${fmtMs(extra.proxy.relayList)})`, extra.proxy.list <= 0.5)
    t('(context) proxy overhead on process.Start `bash -l -c true` (proxy − direct; the shell varies by ±0.5 ms)', `${fmtMs(extra.proxy.run)} (a bare TCP relay: ${fmtMs(extra.proxy.relayRun)})`, extra.proxy.run <= 0.5)
    t('proxy overhead ≤ 0.5 ms p50 (GET /health, proxy − direct)', `${fmtMs(extra.proxy.health)} (a bare TCP relay: ${fmtMs(extra.proxy.relayHealth)})`, extra.proxy.health <= 0.5)
  } else t('proxy overhead ≤ 0.5 ms p50', '–', null)
  for (const k of ['write', 'read']) {
    const r = find(rows, `files.${k}64`)
    const f = r ? val(r.paddock) / val(r.baseline) : null
    t(`files.${k} 64 MiB ≥ 80% of loopback HTTP throughput`, r ? `${fmtNum(val(r.paddock))} vs ${fmtNum(val(r.baseline))} MiB/s = ${(f * 100).toFixed(0)}%` : '–', r ? f >= 0.8 : null)
  }
  const dn = find(rows, 'density.count'), dm = find(rows, 'density.host'), dg = find(rows, 'density.growth')
  t('density ≥ 500 idle sandboxes', dn ? `${dn.paddock} (${extra.density?.stop})` : '–', dn ? dn.paddock >= 500 : null)
  const dr = find(rows, 'density.released')
  const mem = [dm?.paddock, dr?.paddock].filter((v) => v != null)
  t('≤ 10 MiB host memory per idle sandbox (MemAvailable, at creation / released at kill)', mem.length ? mem.map((v) => `${fmtNum(v)} MiB`).join(' / ') : '–', mem.length ? Math.max(...mem) <= 10 : null)
  t('create latency at 500 within 1.5× of at 1 (p50 last 50 / first 50)', dg?.paddock != null ? `${dg.paddock.toFixed(2)}×` : '–', dg?.paddock != null ? dg.paddock <= 1.5 && (dn?.paddock ?? 0) >= 500 : null)
  for (const k of ['list', 'get']) {
    const th = find(rows, `control.${k}.rps`), la = find(rows, `control.${k}.lat`)
    const ok = th && la ? th.paddock >= 5000 && la.paddock.p99 <= 10 : null
    t(`control plane ${k === 'list' ? 'GET /v2/sandboxes' : 'GET /sandboxes/{id}'} ≥ 5,000 req/s at p99 ≤ 10 ms`, th && la ? `${fmtNum(th.paddock, 0)} req/s, p99 ${fmtMs(la.paddock.p99)}` : '–', ok)
  }
  return out
}

export function writeReport({ file, facts, cfg, rows, extra, command, failed }) {
  const L = []
  const la = (x) => (x ? x.map((v) => v.toFixed(2)).join(' / ') : '?')
  L.push('# Paddock benchmark results', '')
  L.push(`Generated by \`${command}\` (bench/sdk/bench.mjs) on ${facts.date}. Every figure is measured through`)
  L.push('the official E2B JS SDK against a real `paddock serve` unless the metric says otherwise, beside a')
  L.push('baseline measured in the same run (bench/cmd/pbench). Latencies are p50 / p95 / p99 over the')
  L.push('samples; ratio = Paddock ÷ baseline at p50 (for throughput: Paddock as a % of the baseline).', '')
  L.push('| | |', '|---|---|')
  L.push(`| machine | ${facts.host}: ${facts.cpu}, ${facts.memGiB} GiB, ${facts.distro} |`)
  L.push(`| kernel | ${facts.kernel} |`)
  L.push(`| paddock | ${facts.paddock}, commit ${facts.commit} |`)
  L.push(`| runtime | ${facts.runtime} |`)
  L.push(`| client | e2b ${facts.sdk} on Node ${facts.node} |`)
  L.push(`| command | \`${command}\` |`)
  L.push(`| config | N=${cfg.n} sequential, concurrency ${cfg.concurrency.join('/')} (${cfg.concSamples} creates each), ${cfg.cmdN} commands, density max ${cfg.densityMax}, load ${cfg.loadSeconds} s × ${cfg.loadConcurrency} conns${cfg.only.length ? `, only ${cfg.only.join(',')}` : ''}${cfg.quick ? ' (BENCH_QUICK)' : ''} |`)
  L.push(`| load average (1/5/15 min) | start ${la(facts.loadStart)}, end ${la(facts.loadEnd)} (${facts.cpuCount} CPUs; the machine is shared) |`)
  L.push('')
  if (failed) L.push(`**The run failed before finishing:** ${String(failed.message).split('\n')[0]}`, '')
  if (extra.failedSections) L.push(`**Sections that failed (see Notes):** ${extra.failedSections.join(', ')}`, '')

  L.push('## Results', '')
  L.push('| section | metric | Paddock p50 | p95 | p99 | baseline p50 | p95 | p99 | baseline | ratio |')
  L.push('|---|---|---:|---:|---:|---:|---:|---:|---|---:|')
  for (const r of rows) {
    L.push(`| ${r.section} | ${r.metric} | ${cell(r, r.paddock, 'p50')} | ${cell(r, r.paddock, 'p95')} | ${cell(r, r.paddock, 'p99')} | ${r.baseline == null ? '' : cell(r, r.baseline, 'p50')} | ${r.baseline == null ? '' : cell(r, r.baseline, 'p95')} | ${r.baseline == null ? '' : cell(r, r.baseline, 'p99')} | ${r.baselineName || ''} | ${ratioText(r)} |`)
  }
  L.push('')
  if (extra.buckets?.length) {
    L.push('### Sandbox.create() as the count of idle sandboxes grows', '')
    L.push('| sandboxes alive | p50 | p95 | p99 |', '|---|---:|---:|---:|')
    for (const b of extra.buckets) L.push(`| ${b.from - 1}…${b.to - 1} | ${fmtMs(b.s.p50)} | ${fmtMs(b.s.p95)} | ${fmtMs(b.s.p99)} |`)
    L.push('')
  }

  L.push('## Targets (issue 4)', '')
  L.push('| target | measured | |', '|---|---|---|')
  for (const x of targets(rows, extra)) L.push(`| ${x.target} | ${x.measured} | ${x.met} |`)
  L.push('')

  if (extra.phases) {
    L.push(`## Create path, phase by phase (sequential section, ${extra.phases.n} sandboxes)`, '')
    L.push('From `paddock serve --log-level debug`: the runtime\'s "sandbox created" line and the service\'s')
    L.push('"sandbox create phases" line. Phases are sequential; their p50s need not add up exactly.', '')
    L.push('| phase | p50 | p95 | p99 |', '|---|---:|---:|---:|')
    for (const [name, s] of extra.phases.phases) L.push(`| ${name} | ${fmtMs(s?.p50)} | ${fmtMs(s?.p95)} | ${fmtMs(s?.p99)} |`)
    const cr = find(rows, 'create.returned'), fc = find(rows, 'create.firstcmd')
    const tot = extra.phases.phases.at(-1)[1]
    if (cr && tot) L.push(`| outside the service: SDK + HTTP + API (Sandbox.create() − Service.Create, p50) | ${fmtMs(cr.paddock.p50 - tot.p50)} | | |`)
    if (fc) L.push(`| first commands.run("true") after create | ${fmtMs(fc.paddock.p50)} | ${fmtMs(fc.paddock.p95)} | ${fmtMs(fc.paddock.p99)} |`)
    L.push('')
  }
  if (extra.floor?.samples) {
    const f = extra.floor.samples
    L.push('Floor phases (libcontainer alone, p50): ' + ['overlay', 'config', 'create_start', 'total', 'teardown'].map((k) => `${k} ${fmtMs(summarize(f[k])?.p50)}`).join(', ') + '.', '')
  }

  if (extra.profileTop) {
    L.push(`## serve CPU profile during create→run→kill (${cfg.profileSeconds} s, ${extra.profileCreates} sandboxes)`, '')
    L.push('`go tool pprof -top -cum` of bench/.out/serve-create.pprof:', '')
    L.push('```', ...extra.profileTop.trimEnd().split('\n').slice(0, 46), '```', '')
  }
  if (extra.listTop) {
    L.push('## serve CPU profile during the GET /v2/sandboxes load', '')
    L.push('`go tool pprof -top -cum` of bench/.out/serve-control-list.pprof:', '')
    L.push('```', ...extra.listTop.trimEnd().split('\n').slice(0, 46), '```', '')
  }

  L.push('## Baselines', '')
  L.push('- **libcontainer floor** (`pbench floor`): in one Go process, mount the same overlay (the base template layer from the data dir + a fresh upper dir), build the same libcontainer config (runc example spec, user namespace at 100000, pid/ipc/uts/mount/cgroup/network namespaces, Docker caps and default seccomp profile for the native arch, masked paths, 2 CPUs / 512 MiB+swap / 1024 pids, RLIMIT_NOFILE), `Create` + `Run` with `/bin/true` as init, wait for it to exit. libcontainer re-executes pbench as each container\'s init, which switches to `cmd/paddock-init` from a sealed memfd before pbench\'s Go code starts, as paddock\'s does (package `internal/runtime/local/initexe`). No veth (a fresh loopback-only netns), no envd. With `-c`, that many at once.')
  L.push('- **runc**: Debian\'s `runc run` of the same spec as config.json, timed from a Go process (overlay + config + create/start/`true`/delete).')
  L.push('- **host fork+exec**: `os/exec` of `/bin/true`, `bash -c true`, and a `head -c` pipe read, on the host.')
  L.push('- **Go file server**: `pbench fileserver` on loopback storing into the data dir\'s filesystem; the same multipart upload / GET done with Node\'s fetch, as the SDK does.')
  L.push('- **envd direct**: a Go Connect client dialling envd inside the sandbox\'s netns (what the proxy dials) vs the same client through `paddock serve` with E2b-Sandbox-Id/Port headers.')
  L.push('- **bare TCP relay**: the same client through a loopback listener in pbench that copies bytes both ways (io.Copy, spliced by the kernel) to the same netns dial: what any proxy process costs at least.')
  L.push('- **client\'s floor** (`pbench apistub`): the same SDK calls against a static loopback Go server that answers at once: `POST /v2/sandboxes` with a real create response of the serve, envd\'s `process.Start` with a start event and an exit-0 end event. What Node, the SDK and loopback HTTP cost on their own; whatever Paddock measures above it is the server\'s.')
  L.push('- **static Go server**: the control-plane load generator against a loopback Go server returning the same response bytes (the HTTP floor of the load generator on this machine).')
  L.push('- **idle floor** (`pbench idle`): libcontainer containers running `sleep infinity` with the same config; memory and kill+cleanup time per container.')
  L.push('')
  if (extra.notes.length) {
    L.push('## Notes', '')
    for (const n of extra.notes) L.push(`- ${n}`)
    L.push('')
  }
  const text = L.join('\n')
  fs.writeFileSync(file, text)
  return text
}
