// A/B of two (or more) paddock binaries on what a user feels first: each
// runs its own `paddock serve` (own data dir, port, bridge and subnet) at
// the same time, and the creates alternate between them, so drift in the
// shared machine's load hits every binary alike. Per round and binary:
// Sandbox.create(), the first commands.run('true'), a second one, kill.
//
//   node bench/sdk/ab.mjs OLD_BIN NEW_BIN [...]   (run as root; see bench/README.md)
//
// Environment: AB_N rounds (default 60), AB_REST_MS pause before each create
// (default 100), AB_SERVE_ARGS extra serve flags (e.g. "--pool-size 2").
// Prints p50/p90 per binary and each binary's p50 over the first one's.
import { Sandbox } from 'e2b'
import { setTimeout as sleep } from 'node:timers/promises'
import { Serve } from './lib/serve.mjs'
import { summarize, fmtMs } from './lib/stats.mjs'

const bins = process.argv.slice(2)
if (bins.length < 2) {
  console.error('usage: node bench/sdk/ab.mjs OLD_BIN NEW_BIN [...]')
  process.exit(2)
}
const rounds = Number(process.env.AB_N || 60)
const restMs = Number(process.env.AB_REST_MS || 100)
const extraArgs = (process.env.AB_SERVE_ARGS || '').split(' ').filter(Boolean)
const log = (s) => console.error(`[ab] ${s}`)

const serves = bins.map(
  (bin, i) =>
    new Serve({ bin, bridge: `pdab${i}`, subnet: `10.${240 + i}.0.0/16`, outDir: process.env.AB_OUT || '/tmp', logName: `ab-serve-${i}.log`, log, extraArgs }),
)
const metrics = ['create', 'first command', 'second command', 'create → first command done']
const samples = bins.map(() => Object.fromEntries(metrics.map((m) => [m, []])))
try {
  for (const s of serves) await s.start()
  await sleep(2000) // a pool, when asked for, fills
  for (let i = 0; i < rounds; i++) {
    for (const [k, s] of serves.entries()) {
      const opts = { apiUrl: s.url, sandboxUrl: s.url, apiKey: s.apiKey, requestTimeoutMs: 120_000 }
      await sleep(restMs)
      const t0 = performance.now()
      const sbx = await Sandbox.create(opts)
      const t1 = performance.now()
      await sbx.commands.run('true')
      const t2 = performance.now()
      await sbx.commands.run('true')
      const t3 = performance.now()
      await sbx.kill()
      const m = samples[k]
      m['create'].push(t1 - t0)
      m['first command'].push(t2 - t1)
      m['second command'].push(t3 - t2)
      m['create → first command done'].push(t2 - t0)
    }
  }
} finally {
  for (const s of serves) await s.stop().catch((e) => log(`stop: ${e.message}`))
}

console.log(`| metric | ${bins.map((b) => `${b} p50 / p90`).join(' | ')} | ${bins.slice(1).map((_, i) => `#${i + 2} ÷ #1 (p50)`).join(' | ')} |`)
console.log(`|---|${bins.map(() => '---:').join('|')}|${bins.slice(1).map(() => '---:').join('|')}|`)
for (const m of metrics) {
  const st = samples.map((x) => summarize(x[m]))
  const at90 = (k) => {
    const s = [...samples[k][m]].sort((a, b) => a - b)
    return s[Math.min(s.length - 1, Math.ceil(0.9 * s.length) - 1)]
  }
  const cells = st.map((x, k) => `${fmtMs(x.p50)} / ${fmtMs(at90(k))}`)
  const ratios = st.slice(1).map((x) => `${(x.p50 / st[0].p50).toFixed(3)}`)
  console.log(`| ${m} | ${cells.join(' | ')} | ${ratios.join(' | ')} |`)
}
console.log(`\n${rounds} rounds, ${restMs} ms rest before each create, serve args: ${extraArgs.join(' ') || '(none)'}`)
