// The README quick start (issue 3, check 4): `paddock serve` on a FRESH data
// dir prints the lines to export and a first API key, saves the key with mode
// 0600, the printed settings work with the SDK as the README shows,
// `paddock apikey create|list|revoke` work while the server runs, and a
// second start prints no new key. The test starts its own server (free port,
// own bridge and subnet) and checks the host is clean after it stopped.
// Needs root; run.sh quickstart runs it (PADDOCK_BIN names the binary).
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { after, before, describe, test } from 'node:test'
import * as sdk from 'e2b'
import { hostTraces, killAllSandboxes, serveFixture, stopServe, teardownNetwork } from './lib/serve-host.mjs'
import { describeError, rejection, waitFor } from './lib/util.mjs'

const { Sandbox, AuthenticationError } = sdk
const here = dirname(fileURLToPath(import.meta.url))
const bin = resolve(process.env.PADDOCK_BIN || join(here, '../../bin/paddock'))
const T = { timeout: 120_000 }
const KEY_RE = /^e2b_[0-9a-f]{40}$/
const run = promisify(execFile)

describe('README quick start: paddock serve on a fresh data dir', () => {
  const fx = serveFixture({ bin, name: 'quickstart', bridgePrefix: 'pdsq', seed: 4099, readKey: false })
  const bridge = fx.bridge
  let dataDir
  let server
  let key
  const ids = []

  // The SDK configured only by what the banner said to export.
  const opts = (apiKey = key) => ({ apiKey, apiUrl: server.url, sandboxUrl: server.url })
  const apikey = (...args) => run(bin, ['apikey', ...args, '--data-dir', dataDir], { timeout: 30_000 })

  before(async () => {
    ;({ dataDir, server, key } = await fx.start())
  })

  after(() => fx.stop(ids))

  test('the first start prints the three exports and an e2b_ + 40 hex key', T, async () => {
    // The banner follows the listener; GET /health can answer a moment before it.
    await waitFor(() => server.stdout().includes('E2B_API_KEY='), {
      what: 'the banner on stdout',
      describe: () => JSON.stringify(server.stdout()),
    })
    const lines = server.stdout().split('\n')
    assert.ok(lines.includes(`  export E2B_API_URL=${server.url}`), `E2B_API_URL line in:\n${server.stdout()}`)
    assert.ok(lines.includes(`  export E2B_SANDBOX_URL=${server.url}`), `E2B_SANDBOX_URL line in:\n${server.stdout()}`)
    const keyLines = lines.filter((l) => l.startsWith('  export E2B_API_KEY='))
    assert.equal(keyLines.length, 1, server.stdout())
    key = keyLines[0].slice('  export E2B_API_KEY='.length)
    fx.key = key // for the safety net of after()
    assert.match(key, KEY_RE)
    assert.equal(server.stdout().split(key).length - 1, 1, 'the key is printed once')
    assert.ok(!server.stderr().includes(key), 'the key does not appear in the logs')
  })

  test('<data-dir>/initial-api-key has mode 0600 and the printed key', T, async () => {
    const path = join(dataDir, 'initial-api-key')
    const st = statSync(path)
    assert.equal(st.mode & 0o777, 0o600, `mode ${(st.mode & 0o777).toString(8)}`)
    assert.equal(st.uid, 0)
    assert.equal(readFileSync(path, 'utf8').trim(), key)
    assert.ok(server.stdout().includes(path), 'the banner names the file')
  })

  test("the exported settings work with the SDK (the README's one-liner)", T, async () => {
    const sbx = await Sandbox.create(opts())
    ids.push(sbx.sandboxId)
    const r = await sbx.commands.run('uname -a')
    assert.match(r.stdout, /^Linux /)
    assert.equal(await sbx.kill(), true)
  })

  test('sandboxes run the slim guest binary that make build embeds, installed under <data-dir>/bin', T, async () => {
    const installed = readdirSync(join(dataDir, 'bin')).filter((n) => /^paddock-guest-[0-9a-f]{16}$/.test(n))
    assert.equal(installed.length, 1, `one guest binary in ${dataDir}/bin: ${installed}`)
    const guestSize = statSync(join(dataDir, 'bin', installed[0])).size
    assert.ok(guestSize < statSync(bin).size / 2, `guest ${guestSize} B is much smaller than paddock ${statSync(bin).size} B`)
    const sbx = await Sandbox.create(opts())
    ids.push(sbx.sandboxId)
    const r = await sbx.commands.run('stat -c %s /.paddock/paddock; cat /proc/1/cmdline | tr "\\0" " "')
    const [size, cmdline] = r.stdout.split('\n')
    assert.equal(Number(size), guestSize, 'the file mounted in the sandbox is the guest binary')
    assert.match(cmdline, /^\/\.paddock\/paddock envd /, 'PID 1 is envd')
    assert.equal(await sbx.kill(), true)
  })

  test('paddock apikey create, list and revoke work while the server runs', T, async () => {
    const created = await apikey('create', '--name', 'sdk quickstart')
    const newKey = created.stdout.trim()
    assert.match(newKey, KEY_RE, `apikey create printed ${JSON.stringify(created.stdout)}`)
    assert.notEqual(newKey, key)

    const list = (await apikey('list')).stdout
    assert.ok(list.includes('sdk quickstart') && list.includes('initial'), list)
    assert.equal(list.trim().split('\n').length, 3, `a header and two keys:\n${list}`)
    assert.ok(!list.includes(newKey) && !list.includes(key), 'list shows masks, not keys')

    // The new key works against the running server at once.
    const sbx = await Sandbox.create(opts(newKey))
    ids.push(sbx.sandboxId)
    assert.equal((await sbx.commands.run('echo new-key')).stdout, 'new-key\n')
    const listed = await Sandbox.list(opts(newKey)).nextItems()
    assert.ok(listed.some((s) => s.sandboxId === sbx.sandboxId), 'listed with the new key')
    assert.equal(await Sandbox.kill(sbx.sandboxId, opts(newKey)), true)

    const revoked = await apikey('revoke', newKey)
    assert.match(revoked.stdout, /revoked API key/)
    const err = await rejection(Sandbox.list(opts(newKey)).nextItems(), 'list with a revoked key')
    assert.ok(err instanceof AuthenticationError, `want AuthenticationError, got ${describeError(err)}`)
    assert.ok(Array.isArray(await Sandbox.list(opts()).nextItems()), 'the first key still works')
    const after = (await apikey('list')).stdout
    assert.ok(!after.includes('sdk quickstart'), `the revoked key is gone from the list:\n${after}`)
  })

  test('a second start on the same data dir prints no new key', T, async () => {
    const keyFile = join(dataDir, 'initial-api-key')
    const before = statSync(keyFile)
    server = await fx.restart() // SIGTERM must end serve cleanly
    await waitFor(() => server.stdout().includes('E2B_SANDBOX_URL='), {
      what: 'the banner on stdout',
      describe: () => JSON.stringify(server.stdout()),
    })
    const out = server.stdout()
    assert.ok(out.split('\n').includes(`  export E2B_API_URL=${server.url}`), out)
    assert.ok(!out.includes('E2B_API_KEY'), `no key line on a second start:\n${out}`)
    assert.ok(!/e2b_[0-9a-f]{40}/.test(out), `no key printed:\n${out}`)
    const now = statSync(keyFile)
    assert.equal(readFileSync(keyFile, 'utf8').trim(), key, 'initial-api-key unchanged')
    assert.equal(now.mtimeMs, before.mtimeMs, 'initial-api-key not rewritten')
    assert.equal((await apikey('list')).stdout.trim().split('\n').length, 2, 'still one key')
    assert.ok(Array.isArray(await Sandbox.list(opts()).nextItems()), 'the first key works after the restart')
  })

  test('after kill and stop, nothing is left on the host', T, async () => {
    await killAllSandboxes(server.url, key, ids)
    await stopServe(server)
    assert.deepEqual(hostTraces({ dataDir, bridge, ids }), [])
    teardownNetwork(bridge)
    assert.equal(existsSync(`/sys/class/net/${bridge}`), false, 'bridge removed')
  })
})
