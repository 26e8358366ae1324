// Percentiles and formatting for the benchmark report. Nearest-rank
// percentiles over the raw samples; nothing is interpolated.

/** @returns {{n:number,p50:number,p95:number,p99:number,min:number,max:number,mean:number}|null} */
export function summarize(xs) {
  if (!xs || xs.length === 0) return null
  const s = [...xs].sort((a, b) => a - b)
  const at = (p) => s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))]
  return {
    n: s.length,
    p50: at(0.5),
    p95: at(0.95),
    p99: at(0.99),
    min: s[0],
    max: s[s.length - 1],
    mean: s.reduce((a, b) => a + b, 0) / s.length,
  }
}

export function median(xs) {
  return summarize(xs)?.p50 ?? NaN
}

/** Formats milliseconds with a precision that suits the magnitude. */
export function fmtMs(v) {
  if (v == null || Number.isNaN(v)) return '–'
  if (v >= 100) return `${v.toFixed(0)} ms`
  if (v >= 10) return `${v.toFixed(1)} ms`
  return `${v.toFixed(2)} ms`
}

export function fmtNum(v, digits = 1) {
  if (v == null || Number.isNaN(v)) return '–'
  return v.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits })
}

/** MiB/s of `bytes` moved in `ms` milliseconds. */
export function mibps(bytes, ms) {
  return bytes / (1 << 20) / (ms / 1000)
}
