// Small helpers shared by the SDK suites. Nothing here talks to a sandbox.
import { createHash, randomBytes } from 'node:crypto'

/** sha256 hex digest of a string (UTF-8) or bytes. */
export function sha256(data) {
  return createHash('sha256').update(data).digest('hex')
}

/** A short random suffix for unique names and markers. */
export function uniq(n = 6) {
  return randomBytes(n).toString('hex')
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/**
 * Poll cond() until it returns a truthy value (which is returned) or
 * timeoutMs passes; then throw, including describe() in the message so a
 * failure says what was seen.
 */
export async function waitFor(cond, { timeoutMs = 10_000, intervalMs = 25, what = 'condition', describe } = {}) {
  const deadline = Date.now() + timeoutMs
  let lastErr
  for (;;) {
    try {
      const v = await cond()
      if (v) return v
    } catch (err) {
      lastErr = err
    }
    if (Date.now() > deadline) {
      const seen = describe ? `; seen: ${describe()}` : ''
      const cause = lastErr ? `; last error: ${lastErr}` : ''
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${seen}${cause}`)
    }
    await sleep(intervalMs)
  }
}

/** Shell-quote one argument for bash. */
export function sq(s) {
  return `'${String(s).replaceAll("'", `'\\''`)}'`
}

/**
 * Go's os.FileMode.String() for a permission-only mode and a type letter
 * ('-' file, 'd' directory): what envd reports as EntryInfo.permissions.
 */
export function goPermissions(typeLetter, mode) {
  const rwx = 'rwxrwxrwx'
  let s = typeLetter
  for (let i = 0; i < 9; i++) s += mode & (1 << (8 - i)) ? rwx[i] : '-'
  return s
}

/** Describe an error for assertion messages: class name, code and message. */
export function describeError(err) {
  if (!err) return String(err)
  const parts = [err.constructor?.name ?? typeof err]
  if (err.name && err.name !== parts[0]) parts.push(`name=${err.name}`)
  if (err.exitCode !== undefined) parts.push(`exitCode=${err.exitCode}`)
  if (err.code !== undefined) parts.push(`code=${err.code}`)
  parts.push(JSON.stringify(String(err.message ?? err)).slice(0, 400))
  return parts.join(' ')
}

/**
 * Await p and return the error it rejects with; fail (with what it resolved
 * to) if it resolves.
 */
export async function rejection(p, what = 'promise') {
  let value
  try {
    value = await p
  } catch (err) {
    return err
  }
  throw new Error(`${what} resolved (${JSON.stringify(value)?.slice(0, 300)}) but should have rejected`)
}
