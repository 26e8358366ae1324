// Measures (never asserts) the control plane through the official SDK against
// `paddock serve` (run.sh bench-serve starts one and sets E2B_API_URL,
// E2B_SANDBOX_URL, E2B_API_KEY):
//   - Sandbox.create() until it returns, over 50 sequential creates (each
//     sandbox is killed after its measurement, outside the timing);
//   - commands.run('true') through the proxy, 200 runs in one sandbox.
// `node bench-serve.mjs e2b-2.50` measures the 2.50 SDK (v1 routes) instead.
import { appendFileSync } from 'node:fs'
import { performance } from 'node:perf_hooks'

const pkg = process.argv[2] || 'e2b'
const { Sandbox } = await import(pkg)
for (const v of ['E2B_API_URL', 'E2B_SANDBOX_URL', 'E2B_API_KEY']) {
  if (!process.env[v]) throw new Error(`${v} is not set: run test/sdk/run.sh bench-serve`)
}

const sorted = (xs) => [...xs].sort((a, b) => a - b)
const median = (xs) => {
  const s = sorted(xs)
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}
/** Nearest-rank percentile (for 50 samples, p99 is the slowest one). */
const pct = (xs, p) => sorted(xs)[Math.min(xs.length - 1, Math.ceil(xs.length * p) - 1)]
const fmt = (ms) => `${ms.toFixed(1)} ms`
function report(label, times, extra = '') {
  console.log(
    `${label}: median ${fmt(median(times))}, p90 ${fmt(pct(times, 0.9))}, p99 ${fmt(pct(times, 0.99))}, ` +
      `min ${fmt(Math.min(...times))}, max ${fmt(Math.max(...times))} (${times.length} runs${extra})`,
  )
}

console.log(`SDK ${pkg}, server ${process.env.E2B_API_URL}`)

/** Sandbox.create(), with the ID recorded for run.sh's host check. */
async function create() {
  const sbx = await Sandbox.create()
  if (process.env.PADDOCK_SDK_IDS_FILE) appendFileSync(process.env.PADDOCK_SDK_IDS_FILE, `${sbx.sandboxId}\n`)
  return sbx
}

// Sandbox.create(): one warm-up (page cache of the template layers), then 50.
{
  const warm = performance.now()
  const first = await create()
  console.log(`Sandbox.create() warm-up: ${fmt(performance.now() - warm)}`)
  await first.kill()
  const times = []
  for (let i = 0; i < 50; i++) {
    const t0 = performance.now()
    const sbx = await create()
    times.push(performance.now() - t0)
    await sbx.kill()
  }
  report('Sandbox.create()', times, ', sequential, kill outside the timing')
}

// commands.run('true') through the proxy (default user `user`, and root).
{
  const sbx = await create()
  try {
    for (const [label, opts] of [
      ["commands.run('true')", {}],
      ["commands.run('true', {user:'root'})", { user: 'root' }],
    ]) {
      for (let i = 0; i < 10; i++) await sbx.commands.run('true', opts)
      const times = []
      for (let i = 0; i < 200; i++) {
        const t0 = performance.now()
        await sbx.commands.run('true', opts)
        times.push(performance.now() - t0)
      }
      report(label, times, ' after 10 warm-up, through the proxy')
    }
  } finally {
    await sbx.kill()
  }
}
