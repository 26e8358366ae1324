// Measures (never asserts) envd latency through the official SDK in debug mode:
// the median of commands.run('true') over 200 runs and of a 1 MiB files.write
// over 100 runs. Needs `paddock envd` on localhost:49983 (`run.sh bench`
// starts one).
import { randomBytes } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import { Sandbox } from 'e2b'

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}
const pct = (xs, p) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]

async function measure(label, runs, warmup, fn) {
  for (let i = 0; i < warmup; i++) await fn(i)
  const times = []
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now()
    await fn(i)
    times.push(performance.now() - t0)
  }
  console.log(
    `${label}: median ${median(times).toFixed(2)} ms, p90 ${pct(times, 0.9).toFixed(2)} ms, ` +
      `min ${Math.min(...times).toFixed(2)} ms (${runs} runs after ${warmup} warm-up)`,
  )
  return median(times)
}

const sbx = await Sandbox.create({ debug: true })
const dir = `/tmp/paddock-bench-${process.pid}`
const data = randomBytes(1024 * 1024)
const ab = data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength)

try {
  await measure("commands.run('true')", 200, 10, () => sbx.commands.run('true'))
  // The same as `user`: every command is `bash -l -c`, so the default user's
  // dotfiles (root's, on a debug host) are part of the number above.
  await measure("commands.run('true', {user:'user'})", 200, 10, () => sbx.commands.run('true', { user: 'user' }))
  await measure('files.write 1 MiB', 100, 5, (i) => sbx.files.write(`${dir}/f${i % 4}.bin`, ab))
} finally {
  await sbx.files.remove(dir).catch(() => {})
}
