// The warm pool (issue 4): `paddock serve --pool-size 2` keeps two started
// sandboxes of `base` ready. The official SDK's Sandbox.create() takes them:
// envs given at create are visible to commands, sandboxes from the pool are
// distinct and isolated from each other, the pooled ones never show in a
// listing (of any team), kill works, a request the pool cannot serve
// (no internet) goes the cold path, the pool refills, and after the server
// stops nothing of any sandbox (taken or pooled) is left on the host.
// The test starts its own server (free port, own bridge, subnet and data
// dir). Needs root; run.sh pool runs it (PADDOCK_BIN names the binary).
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { after, before, describe, test } from 'node:test'
import * as sdk from 'e2b'
import { hostTraces, killAllSandboxes, serveFixture, stopServe, teardownNetwork } from './lib/serve-host.mjs'
import { waitFor } from './lib/util.mjs'

const { Sandbox } = sdk
const here = dirname(fileURLToPath(import.meta.url))
const bin = resolve(process.env.PADDOCK_BIN || join(here, '../../bin/paddock'))
const outDir = process.env.PADDOCK_SDK_OUT || join(here, '.out')
const T = { timeout: 60_000 }
const POOL = 2
const run = promisify(execFile)

describe('warm pool: paddock serve --pool-size 2', () => {
  const fx = serveFixture({ bin, name: 'pool', bridgePrefix: 'pdpl', seed: 7919, extraArgs: ['--pool-size', String(POOL), '--log-level', 'debug'], logFile: join(outDir, 'pool-serve.log') })
  const bridge = fx.bridge
  let dataDir
  let server
  let key
  const ids = [] // every sandbox the SDK created
  const sbxs = []

  const opts = (apiKey = key) => ({ apiKey, apiUrl: server.url, sandboxUrl: server.url })
  const health = async () => (await (await fetch(`${server.url}/health`)).json()).checks?.warmPool
  const waitFull = () =>
    waitFor(async () => (await health()) === `base ${POOL}/${POOL}`, {
      timeoutMs: 30_000,
      what: `/health warmPool "base ${POOL}/${POOL}"`,
      describe: async () => JSON.stringify(await health()),
    })
  // The IDs serve's log names: pooled ones ("warm pool: sandbox ready") and
  // those handed out from the pool ("sandbox created ... pool=true").
  const logIds = (re) => [...server.stderr().matchAll(re)].map((m) => m[1])
  const pooledIds = () => logIds(/msg="warm pool: sandbox ready" .*? sandbox=(\S+)/g)
  const takenIds = () => logIds(/msg="sandbox created" .*? sandbox=(\S+) .*pool=true/g)
  const create = async (o = {}) => {
    const sbx = await Sandbox.create({ ...opts(), ...o })
    ids.push(sbx.sandboxId)
    sbxs.push(sbx)
    return sbx
  }

  before(async () => {
    ;({ dataDir, server, key } = await fx.start())
  })

  after(() => fx.stop(ids))

  test('the pool fills and /health reports it', T, async () => {
    await waitFull()
    assert.equal(pooledIds().length, POOL)
  })

  test('creates take pooled sandboxes; envs given at create are visible', T, async () => {
    const ready = new Set(pooledIds())
    const a = await create({ envs: { FOO: 'from-a' }, metadata: { who: 'a' } })
    const b = await create({ envs: { FOO: 'from-b' }, metadata: { who: 'b' } })
    assert.notEqual(a.sandboxId, b.sandboxId)
    for (const s of [a, b]) assert.ok(ready.has(s.sandboxId), `${s.sandboxId} came from the pool (${[...ready]})`)
    // serve's log reaches us through a pipe: wait for the lines to arrive.
    await waitFor(() => takenIds().includes(a.sandboxId) && takenIds().includes(b.sandboxId), { what: 'the "sandbox created ... pool=true" log lines' })
    assert.deepEqual(new Set(takenIds()), new Set([a.sandboxId, b.sandboxId]))
    assert.equal((await a.commands.run('echo $FOO')).stdout, 'from-a\n')
    assert.equal((await b.commands.run('echo $FOO')).stdout, 'from-b\n')
    assert.equal((await a.commands.run('echo $E2B_SANDBOX_ID')).stdout, `${a.sandboxId}\n`)
    // Per-command envs still override.
    assert.equal((await a.commands.run('echo $FOO', { envs: { FOO: 'cmd' } })).stdout, 'cmd\n')
    const info = await a.getInfo()
    assert.equal(info.metadata.who, 'a')
    assert.ok(new Date(info.endAt) > new Date(), 'end time in the future')
  })

  test('sandboxes from the pool are isolated from each other', T, async () => {
    const [a, b] = sbxs
    await a.files.write('/tmp/mine', 'a-secret')
    assert.equal(await b.files.exists('/tmp/mine'), false, 'b sees a file of a')
    await a.commands.run('sleep 600', { background: true })
    const ps = await b.commands.run('ps -eo args')
    assert.ok(!ps.stdout.includes('sleep 600'), `b sees a's process:\n${ps.stdout}`)
    assert.equal((await a.commands.run('hostname')).stdout.trim(), a.sandboxId)
    assert.equal((await b.commands.run('hostname')).stdout.trim(), b.sandboxId)
    // Each has its own envd token (derived from its ID): a's does not open b's envd.
    assert.ok(a.envdAccessToken && b.envdAccessToken && a.envdAccessToken !== b.envdAccessToken)
    const envs = async (target, token) => {
      const res = await fetch(`${server.url}/envs`, {
        headers: { 'E2b-Sandbox-Id': target.sandboxId, 'E2b-Sandbox-Port': '49983', 'X-Access-Token': token },
      })
      return { status: res.status, body: await res.text() }
    }
    assert.equal((await envs(b, a.envdAccessToken)).status, 401, "b's envd refuses a's token")
    const own = await envs(b, b.envdAccessToken)
    assert.equal(own.status, 200, own.body)
    assert.equal(JSON.parse(own.body).FOO, 'from-b')
  })

  test('a listing shows only the caller team sandboxes, never pooled ones', T, async () => {
    await waitFull() // refilled: two new pooled sandboxes exist now
    const listed = (await Sandbox.list(opts()).nextItems()).map((s) => s.sandboxId).sort()
    assert.deepEqual(listed, [...ids].sort())
    const { stdout } = await run(bin, ['apikey', 'create', '--team', 'other', '--data-dir', dataDir], { timeout: 30_000 })
    const other = stdout.trim()
    assert.deepEqual(await Sandbox.list(opts(other)).nextItems(), [], 'another team lists nothing')
    for (const id of pooledIds().filter((id) => !ids.includes(id))) {
      const res = await fetch(`${server.url}/sandboxes/${id}`, { headers: { 'X-API-KEY': key } })
      await res.arrayBuffer()
      assert.equal(res.status, 404, `pooled ${id} is not visible`)
    }
  })

  test('a create without envs takes one as it is (no second /init) and works', T, async () => {
    const ready = new Set(pooledIds().filter((id) => !ids.includes(id)))
    const d = await create()
    assert.ok(ready.has(d.sandboxId), 'from the pool')
    await waitFor(() => takenIds().includes(d.sandboxId), { what: `the "sandbox created ... pool=true" log line of ${d.sandboxId}` })
    assert.equal((await d.commands.run('echo "[$FOO] $E2B_SANDBOX_ID $(whoami) $PWD"')).stdout, `[] ${d.sandboxId} user /home/user\n`)
    await d.files.write('/home/user/x', 'y')
    assert.equal(await d.files.read('/home/user/x'), 'y')
  })

  test('a request the pool cannot serve (no internet) goes cold and works', T, async () => {
    await waitFull()
    const ready = new Set(pooledIds())
    const c = await create({ allowInternetAccess: false, envs: { FOO: 'cold' } })
    assert.ok(!ready.has(c.sandboxId), 'not from the pool')
    await waitFor(() => logIds(/msg="sandbox created" .*? sandbox=(\S+)/g).includes(c.sandboxId), { what: `the log of ${c.sandboxId}` })
    assert.ok(!takenIds().includes(c.sandboxId))
    assert.equal((await c.commands.run('echo $FOO')).stdout, 'cold\n')
    assert.equal(await health(), `base ${POOL}/${POOL}`, 'the pool is untouched')
  })

  test('kill works on sandboxes from the pool', T, async () => {
    for (const s of sbxs) assert.equal(await s.kill(), true)
    assert.deepEqual(await Sandbox.list(opts()).nextItems(), [])
    assert.equal(await sbxs[0].isRunning().catch(() => false), false)
  })

  test('after stop, nothing of taken or pooled sandboxes is left on the host', T, async () => {
    await killAllSandboxes(server.url, key, ids)
    await waitFull()
    const st = await stopServe(server)
    assert.equal(st.code, 0, `SIGTERM ends serve cleanly: ${JSON.stringify(st)}`)
    assert.match(server.stderr(), /warm pool: pooled sandboxes destroyed.* count=2/)
    const all = [...new Set([...ids, ...pooledIds()])]
    assert.ok(all.length >= ids.length + POOL)
    assert.deepEqual(hostTraces({ dataDir, bridge, ids: all }), [])
    teardownNetwork(bridge)
  })
})
