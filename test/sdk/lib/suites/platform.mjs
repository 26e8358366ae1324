// The Platform API through the official SDK: create, connect, list (metadata
// and state filters, pagination), getInfo, setTimeout, kill, expiry,
// isRunning, getMetrics, envs and metadata, and bad input with the errors the
// SDK maps them to; plus the raw API's error shape. Needs the serve target
// (lib/targets/serve.mjs): ctx.create, ctx.api, ctx.proxyFetch, ctx.routes.
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { describeError, rejection, sleep, uniq, waitFor } from '../util.mjs'

const T = { timeout: 60_000 }
const MiB = 1024 * 1024
/** Sandbox IDs as E2B issues them: "i" and 20 lowercase letters or digits. */
const ID_RE = /^i[a-z0-9]{20}$/

/** Assert that date d is within tolMs of the epoch-ms value want. */
function near(d, want, tolMs, what) {
  assert.ok(d instanceof Date && !Number.isNaN(d.getTime()), `${what}: want a Date, got ${d}`)
  const off = d.getTime() - want
  assert.ok(Math.abs(off) <= tolMs, `${what}: ${d.toISOString()} is ${off} ms from ${new Date(want).toISOString()} (tolerance ${tolMs} ms)`)
}

/** Every page of a paginator (bounded), as one array. */
async function allItems(paginator, maxPages = 50) {
  const items = []
  for (let i = 0; paginator.hasNext; i++) {
    assert.ok(i < maxPages, `more than ${maxPages} pages`)
    items.push(...(await paginator.nextItems()))
  }
  return items
}

/** Register the platform tests against the serve target ctx. */
export function registerPlatformTests(ctx) {
  const { Sandbox, AuthenticationError, SandboxError, SandboxNotFoundError, TimeoutError } = ctx.sdk
  const tag = uniq() // marks this file's sandboxes in metadata filters
  const bogusId = () => `i${uniq(10)}` // well-formed, never issued

  const isA = (err, cls, what) => assert.ok(err instanceof cls, `${what}: want ${cls.name}, got ${describeError(err)}`)
  /** A SandboxError carrying the HTTP status (the SDK's mapping of other API errors). */
  function isStatus(err, status, what) {
    isA(err, SandboxError, what)
    assert.equal(err.statusCode, status, `${what}: statusCode (${describeError(err)})`)
  }
  const ids = (list) => list.map((s) => s.sandboxId)

  describe(`platform: create, connect, info (${ctx.routes} routes)`, () => {
    const metadata = { suite: 'platform', run: tag, note: 'spaces, & ampersands, = equals' }
    const envs = { PADDOCK_CREATE_ENV: 'from create', PADDOCK_SECOND: 'x=y z' }
    let sbx
    let createdAt
    before(async () => {
      createdAt = Date.now()
      sbx = await ctx.create({ timeoutMs: 600_000, metadata, envs })
    })

    test('create returns a sandbox with an E2B-style ID that is usable at once', T, async () => {
      assert.match(sbx.sandboxId, ID_RE)
      assert.equal(await sbx.isRunning(), true)
      const r = await sbx.commands.run('echo ready; id -un')
      assert.equal(r.stdout, 'ready\nuser\n')
    })

    test('envs given to create are visible to commands of every user', T, async () => {
      const cmd = 'printf "%s|%s" "$PADDOCK_CREATE_ENV" "$PADDOCK_SECOND"'
      assert.equal((await sbx.commands.run(cmd)).stdout, 'from create|x=y z')
      assert.equal((await sbx.commands.run(cmd, { user: 'root' })).stdout, 'from create|x=y z')
      // A command's own envs win over the sandbox's.
      assert.equal((await sbx.commands.run(cmd, { envs: { PADDOCK_SECOND: 'own' } })).stdout, 'from create|own')
    })

    test("the base template's login shells set Debian's PATH per user without running id, and root's runs mesg only on a terminal", T, async () => {
      const userPath = '/usr/local/bin:/usr/bin:/bin:/usr/local/games:/usr/games'
      const rootPath = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
      assert.equal((await sbx.commands.run('echo "$PATH"')).stdout, `${userPath}\n`)
      assert.equal((await sbx.commands.run('echo "$PATH"', { user: 'root' })).stdout, `${rootPath}\n`)
      // With no `id` to find, bash's profile still chooses (it asks $EUID);
      // dash, which has no $EUID, still asks id.
      const noId = 'env -i HOME=/home/user PATH=/nowhere /bin/bash -l -c \'echo "$PATH"\''
      const r = await sbx.commands.run(noId)
      assert.equal(r.stdout, `${userPath}\n`)
      assert.equal(r.stderr, '')
      assert.equal((await sbx.commands.run('env -i PATH=/usr/bin:/bin /bin/sh -l -c \'echo "$PATH"\'', { user: 'root' })).stdout, `${rootPath}\n`)
      // root's ~/.profile runs mesg only for a terminal: a mesg first on
      // root's PATH leaves a mark when it runs.
      const root = { user: 'root' }
      await sbx.commands.run('printf \'#!/bin/sh\\necho "$@" > /tmp/mesg-ran\\n\' > /usr/local/sbin/mesg && chmod +x /usr/local/sbin/mesg', root)
      try {
        await sbx.commands.run('true', root)
        assert.equal((await sbx.commands.run('test -e /tmp/mesg-ran && echo ran || echo no', root)).stdout, 'no\n', 'mesg ran without a terminal')
        const tty = await sbx.commands.run('script -qec "bash -l -c true" /dev/null >/dev/null; cat /tmp/mesg-ran', root)
        assert.equal(tty.stdout, 'n\n', 'mesg n with a terminal')
      } finally {
        await sbx.commands.run('rm -f /usr/local/sbin/mesg /tmp/mesg-ran', root)
      }
    })

    test('getInfo returns template, name base, metadata, times, resources and state', T, async () => {
      const info = await sbx.getInfo()
      assert.equal(info.sandboxId, sbx.sandboxId)
      assert.equal(typeof info.templateId, 'string')
      assert.ok(info.templateId.length > 0, 'templateId is set')
      assert.equal(info.name, 'base')
      assert.deepEqual(info.metadata, metadata)
      assert.equal(info.state, 'running')
      near(info.startedAt, createdAt, 30_000, 'startedAt')
      assert.equal(info.endAt.getTime() - info.startedAt.getTime(), 600_000, 'endAt = startedAt + timeout')
      assert.ok(Number.isInteger(info.cpuCount) && info.cpuCount >= 1, `cpuCount ${info.cpuCount}`)
      assert.ok(Number.isInteger(info.memoryMB) && info.memoryMB >= 64, `memoryMB ${info.memoryMB}`)
      assert.match(info.envdVersion, /^\d+\.\d+\.\d+/)
      // The static form answers the same.
      const again = await Sandbox.getInfo(sbx.sandboxId)
      assert.equal(again.templateId, info.templateId)
      assert.deepEqual(again.metadata, metadata)
    })

    test('metadata round-trips through create, getInfo and list', T, async () => {
      const listed = await allItems(Sandbox.list({ query: { metadata: { run: tag, suite: 'platform' } } }))
      assert.deepEqual(ids(listed), [sbx.sandboxId])
      assert.deepEqual(listed[0].metadata, metadata)
      assert.equal(listed[0].name, 'base')
      assert.equal(listed[0].state, 'running')
    })

    test('Sandbox.connect and sbx.connect return a working sandbox with the same ID', T, async () => {
      const c = await Sandbox.connect(sbx.sandboxId)
      assert.equal(c.sandboxId, sbx.sandboxId)
      const p = `/tmp/connect-${uniq()}.txt`
      await c.files.write(p, 'written through the connected object')
      assert.equal(await sbx.files.read(p), 'written through the connected object', 'same sandbox')
      assert.equal((await c.commands.run('echo via-connect')).stdout, 'via-connect\n')

      const c2 = await sbx.connect()
      assert.equal(c2.sandboxId, sbx.sandboxId)
      assert.equal((await c2.commands.run(`cat ${p}`)).stdout, 'written through the connected object')
    })

    test(`connect only extends the end time (${ctx.routes} connect route)`, T, async () => {
      const before = (await sbx.getInfo()).endAt
      assert.ok(before.getTime() - Date.now() > 120_000, `endAt ${before.toISOString()} is more than 2 min away`)
      const shorter = await Sandbox.connect(sbx.sandboxId, { timeoutMs: 60_000 })
      assert.equal(shorter.sandboxId, sbx.sandboxId)
      const same = (await sbx.getInfo()).endAt
      assert.equal(same.getTime(), before.getTime(), 'a shorter connect timeout left endAt alone')

      const t0 = Date.now()
      await Sandbox.connect(sbx.sandboxId, { timeoutMs: 1_200_000 })
      const later = (await sbx.getInfo()).endAt
      assert.ok(later > before, `endAt moved later: ${before.toISOString()} -> ${later.toISOString()}`)
      near(later, t0 + 1_200_000, 5_000, 'endAt after connect with 20 min')
    })

    test('setTimeout shortens and extends the end time', T, async () => {
      let t0 = Date.now()
      await sbx.setTimeout(120_000)
      near((await sbx.getInfo()).endAt, t0 + 120_000, 5_000, 'endAt after setTimeout(2 min) (shortened from 20 min)')
      t0 = Date.now()
      await sbx.setTimeout(900_000)
      near((await sbx.getInfo()).endAt, t0 + 900_000, 5_000, 'endAt after setTimeout(15 min)')
      t0 = Date.now()
      await Sandbox.setTimeout(sbx.sandboxId, 300_000)
      near((await sbx.getInfo()).endAt, t0 + 300_000, 5_000, 'endAt after Sandbox.setTimeout(5 min)')
      assert.equal(await sbx.isRunning(), true)
    })

    test('both raw connect routes only extend, and return the token again', T, async () => {
      const before = (await sbx.getInfo()).endAt
      for (const path of [`/sandboxes/${sbx.sandboxId}/connect`, `/v2/sandboxes/${sbx.sandboxId}/connect`]) {
        const res = await ctx.api('POST', path, { body: { timeout: 10 } })
        assert.equal(res.status, 200, `POST ${path}: ${res.status} ${res.text}`)
        assert.equal(res.json.sandboxID, sbx.sandboxId)
        assert.equal(res.json.envdAccessToken, sbx.envdAccessToken, 'connect returns the same envd token')
        assert.equal(typeof res.json.envdVersion, 'string')
        assert.equal((await sbx.getInfo()).endAt.getTime(), before.getTime(), `${path} with 10 s left endAt alone`)
      }
      const v2 = await ctx.api('POST', `/v2/sandboxes/${sbx.sandboxId}/connect`)
      assert.equal(v2.status, 200, `v2 connect without a body: ${v2.text}`)
      const v1 = await ctx.api('POST', `/sandboxes/${sbx.sandboxId}/connect`)
      assert.equal(v1.status, 400, `v1 connect requires a body with timeout: ${v1.text}`)
      assert.equal(v1.json?.code, 400)
    })

    test('getMetrics returns samples with CPU count and memory use', T, async () => {
      const info = await sbx.getInfo()
      let ms = []
      await waitFor(
        async () => {
          ms = await sbx.getMetrics()
          return ms.length >= 1
        },
        { timeoutMs: 15_000, intervalMs: 500, what: 'a metrics sample', describe: () => JSON.stringify(ms) },
      )
      assert.ok(Array.isArray(ms))
      for (const m of ms) {
        assert.ok(m.timestamp instanceof Date, `timestamp ${m.timestamp}`)
        assert.ok(m.cpuCount > 0, `cpuCount ${m.cpuCount}`)
        assert.ok(m.memUsed > 0, `memUsed ${m.memUsed}`)
        assert.ok(m.memTotal > 0, `memTotal ${m.memTotal}`)
        assert.ok(m.memUsed <= m.memTotal, `memUsed ${m.memUsed} <= memTotal ${m.memTotal}`)
        assert.equal(typeof m.cpuUsedPct, 'number')
        assert.ok(m.cpuUsedPct >= 0, `cpuUsedPct ${m.cpuUsedPct}`)
      }
      const last = ms.at(-1)
      assert.equal(last.cpuCount, info.cpuCount, 'the sample counts the CPUs getInfo reports')
      assert.equal(last.memTotal, info.memoryMB * MiB, 'memTotal is the memory getInfo reports')
      // Static form, with a time window that holds the samples.
      const st = await Sandbox.getMetrics(sbx.sandboxId, { start: new Date(Date.now() - 3_600_000), end: new Date() })
      assert.ok(st.length >= 1, `Sandbox.getMetrics with a window: ${JSON.stringify(st)}`)
    })

    test('envd control routes are not reachable through the proxy', T, async () => {
      const res = await ctx.proxyFetch(sbx.sandboxId, '/init', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ accessToken: 'stolen' }),
      })
      assert.equal(res.status, 404, `POST /init through the proxy: ${res.status} ${await res.text()}`)
      assert.equal((await sbx.commands.run('echo still-mine')).stdout, 'still-mine\n', 'the sandbox keeps its token')
    })
  })

  describe('platform: list', () => {
    const listTag = uniq()
    const meta = (i) => ({ listRun: listTag, idx: String(i), note: i === 0 ? 'a b&c=d' : 'plain' })
    const sbxs = []
    before(async () => {
      for (let i = 0; i < 3; i++) {
        sbxs.push(await ctx.create({ timeoutMs: 300_000, metadata: meta(i) }))
        await sleep(5) // distinct startedAt, so newest-first order is defined
      }
    })
    after(async () => {
      for (const s of sbxs) await Sandbox.kill(s.sandboxId).catch(() => {})
    })

    test('the metadata filter is an AND of exact matches, values with spaces, & and =', T, async () => {
      const q = (metadata) => allItems(Sandbox.list({ query: { metadata } }))
      assert.deepEqual(new Set(ids(await q({ listRun: listTag }))), new Set(ids(sbxs)))
      assert.deepEqual(ids(await q({ listRun: listTag, idx: '1' })), [sbxs[1].sandboxId])
      assert.deepEqual(ids(await q({ listRun: listTag, note: 'a b&c=d' })), [sbxs[0].sandboxId])
      assert.deepEqual(ids(await q({ note: 'a b&c=d', listRun: listTag, idx: '0' })), [sbxs[0].sandboxId])
      assert.deepEqual(ids(await q({ listRun: listTag, note: 'a b' })), [], 'a prefix of a value does not match')
      assert.deepEqual(ids(await q({ listRun: listTag, idx: '1', note: 'a b&c=d' })), [], 'both keys must match')
      assert.deepEqual(ids(await q({ listRun: `${listTag}-other` })), [])
      const listed = (await q({ listRun: listTag, idx: '0' }))[0]
      assert.deepEqual(listed.metadata, meta(0))
    })

    test('the state filter selects running or paused sandboxes; connect resumes', T, async () => {
      const paused = sbxs[1]
      assert.equal(await paused.pause(), true)
      assert.equal(await paused.pause(), false, 'pausing a paused sandbox returns false')
      const q = (state) => allItems(Sandbox.list({ query: { metadata: { listRun: listTag }, state } }))
      const onlyPaused = await q(['paused'])
      assert.deepEqual(ids(onlyPaused), [paused.sandboxId])
      assert.equal(onlyPaused[0].state, 'paused')
      const running = await q(['running'])
      assert.deepEqual(new Set(ids(running)), new Set([sbxs[0].sandboxId, sbxs[2].sandboxId]))
      assert.ok(running.every((s) => s.state === 'running'))
      assert.equal((await q(['running', 'paused'])).length, 3)
      assert.equal((await q(undefined)).length, 3, 'no state filter lists both')
      assert.equal((await paused.getInfo()).state, 'paused')

      const resumed = await Sandbox.connect(paused.sandboxId)
      assert.equal((await resumed.commands.run('echo resumed')).stdout, 'resumed\n')
      assert.equal((await paused.getInfo()).state, 'running')
      assert.deepEqual(ids(await q(['paused'])), [])
    })

    test('limit 1 pages through every sandbox, newest first, via nextItems/hasNext', T, async () => {
      const p = Sandbox.list({ query: { metadata: { listRun: listTag } }, limit: 1 })
      const pages = []
      while (p.hasNext) {
        assert.ok(pages.length < 10, 'pagination ends')
        const items = await p.nextItems()
        pages.push(ids(items))
        if (p.hasNext) assert.equal(typeof p.nextToken, 'string', 'a next token while pages remain')
      }
      assert.deepEqual(pages, [[sbxs[2].sandboxId], [sbxs[1].sandboxId], [sbxs[0].sandboxId]])
      assert.equal(p.hasNext, false)
      await assert.rejects(p.nextItems(), 'nextItems after the last page rejects')
    })
  })

  describe('platform: kill and expiry', () => {
    test('kill returns true, then false; the sandbox is gone (default timeout 300 s)', T, async () => {
      const s = await ctx.create()
      const info = await s.getInfo()
      assert.equal(info.endAt.getTime() - info.startedAt.getTime(), 300_000, 'default timeout of both create routes')
      assert.equal(await s.isRunning(), true)
      assert.equal(await s.kill(), true)
      assert.equal(await Sandbox.kill(s.sandboxId), false, 'a second kill of the same ID')
      assert.equal(await s.kill(), false)
      assert.equal(await s.isRunning(), false)
      isA(await rejection(s.getInfo(), 'getInfo of a killed sandbox'), SandboxNotFoundError, 'getInfo')
      isA(await rejection(s.commands.run('true'), 'commands.run in a killed sandbox'), SandboxNotFoundError, 'commands.run')
      const listed = await allItems(Sandbox.list())
      assert.ok(!ids(listed).includes(s.sandboxId), 'not listed any more')
    })

    test('a sandbox with a 3 s timeout runs, then expires and disappears', T, async () => {
      const s = await ctx.create({ timeoutMs: 3_000, metadata: { expiry: tag } })
      const info = await s.getInfo()
      assert.equal(info.endAt.getTime() - info.startedAt.getTime(), 3_000)
      assert.equal(await s.isRunning(), true)
      assert.equal((await s.commands.run('echo alive')).stdout, 'alive\n')
      await waitFor(async () => !(await s.isRunning()), { timeoutMs: 15_000, intervalMs: 250, what: 'isRunning() to turn false' })
      assert.ok(Date.now() >= info.endAt.getTime() - 1_000, 'it did not end before its end time')
      isA(await rejection(s.getInfo(), 'getInfo of an expired sandbox'), SandboxNotFoundError, 'getInfo')
      isA(await rejection(s.commands.run('echo late'), 'commands.run after expiry'), SandboxNotFoundError, 'commands.run')
      isA(await rejection(s.files.read('/etc/hostname'), 'files.read after expiry'), TimeoutError, 'files.read')
      assert.deepEqual(ids(await allItems(Sandbox.list({ query: { metadata: { expiry: tag } } }))), [])
      assert.equal(await Sandbox.kill(s.sandboxId), false)
      // The proxy answers a gone sandbox with E2B's 502 body.
      const res = await ctx.proxyFetch(s.sandboxId, '/health')
      const body = await res.text()
      assert.equal(res.status, 502, body)
      const j = JSON.parse(body)
      assert.equal(j.code, 502)
      assert.equal(j.sandboxId, s.sandboxId)
      assert.equal(typeof j.message, 'string')
    })
  })

  describe('platform: bad input', () => {
    test('an unknown template: SandboxError 404, nothing created', T, async () => {
      const err = await rejection(
        Sandbox.create(`paddock-no-such-template-${tag}`, { metadata: { badRun: tag } }),
        'create from an unknown template',
      )
      isStatus(err, 404, 'unknown template')
      assert.match(err.message, /template/i)
      assert.deepEqual(ids(await allItems(Sandbox.list({ query: { metadata: { badRun: tag } } }))), [])
    })

    test('a bad API key: AuthenticationError from create and list', T, async () => {
      const apiKey = `e2b_${'0'.repeat(40)}`
      isA(await rejection(Sandbox.create({ apiKey }), 'create with a bad key'), AuthenticationError, 'create')
      isA(await rejection(Sandbox.list({ apiKey }).nextItems(), 'list with a bad key'), AuthenticationError, 'list')
    })

    test('a negative or too long timeout: SandboxError 400 (create, setTimeout)', T, async () => {
      isStatus(await rejection(Sandbox.create({ timeoutMs: -5_000 }), 'create with timeout -5 s'), 400, 'create -5 s')
      isStatus(await rejection(Sandbox.create({ timeoutMs: 25 * 3_600_000 }), 'create with 25 h'), 400, 'create 25 h')
      const s = await ctx.sandbox()
      const before = (await s.getInfo()).endAt
      isStatus(await rejection(s.setTimeout(-1_000), 'setTimeout(-1 s)'), 400, 'setTimeout -1 s')
      assert.equal((await s.getInfo()).endAt.getTime(), before.getTime(), 'a rejected setTimeout changed nothing')
    })

    test('an unknown sandbox: connect/getInfo/setTimeout throw SandboxNotFoundError, kill returns false', T, async () => {
      const id = bogusId()
      isA(await rejection(Sandbox.connect(id), 'connect'), SandboxNotFoundError, 'connect')
      isA(await rejection(Sandbox.getInfo(id), 'getInfo'), SandboxNotFoundError, 'getInfo')
      isA(await rejection(Sandbox.setTimeout(id, 60_000), 'setTimeout'), SandboxNotFoundError, 'setTimeout')
      assert.equal(await Sandbox.kill(id), false)
      const res = await ctx.api('GET', `/sandboxes/${id}`)
      assert.equal(res.status, 404)
      assert.equal(res.json?.code, 404, res.text)
    })

    test('an invalid list filter: SandboxError 400 from the SDK, 400 JSON on the wire', T, async () => {
      isStatus(await rejection(Sandbox.list({ query: { state: ['exploded'] } }).nextItems(), 'list state exploded'), 400, 'state')
      for (const q of ['metadata=novalue', 'metadata=%25zz', 'metadata=%zz', 'limit=0', 'limit=101', 'nextToken=garbage', 'state=exploded']) {
        const res = await ctx.api('GET', `/v2/sandboxes?${q}`)
        assert.equal(res.status, 400, `GET /v2/sandboxes?${q}: ${res.status} ${res.text}`)
        assert.equal(res.json?.code, 400, res.text)
        assert.equal(typeof res.json?.message, 'string')
      }
    })
  })

  describe('platform: raw API errors', () => {
    test('no API key: 401 with {code, message}', T, async () => {
      const res = await ctx.api('GET', '/v2/sandboxes', { key: null })
      assert.equal(res.status, 401, res.text)
      assert.match(res.headers.get('content-type') ?? '', /application\/json/)
      assert.equal(res.json?.code, 401, res.text)
      assert.equal(typeof res.json?.message, 'string')
    })

    test('an unknown route: 404 JSON', T, async () => {
      for (const [method, path] of [
        ['GET', '/v2/no-such-route'],
        ['POST', '/sandboxes/x/y/z'],
      ]) {
        const res = await ctx.api(method, path)
        assert.equal(res.status, 404, `${method} ${path}: ${res.status} ${res.text}`)
        assert.equal(res.json?.code, 404, res.text)
        assert.equal(typeof res.json?.message, 'string')
      }
    })

    test('malformed JSON: 400 JSON on both create routes', T, async () => {
      for (const path of ['/v2/sandboxes', '/sandboxes']) {
        const res = await ctx.api('POST', path, { body: '{"templateID": "base",', headers: { 'Content-Type': 'application/json' } })
        assert.equal(res.status, 400, `POST ${path}: ${res.status} ${res.text}`)
        assert.equal(res.json?.code, 400, res.text)
        assert.equal(typeof res.json?.message, 'string')
      }
      const conn = await ctx.api('POST', `/sandboxes/${bogusId()}/connect`, { body: '{', headers: { 'Content-Type': 'application/json' } })
      assert.equal(conn.status, 400, conn.text)
      assert.equal(conn.json?.code, 400, conn.text)
    })

    test('the create routes answer 201 with the fields the SDKs require', T, async () => {
      for (const path of ['/v2/sandboxes', '/sandboxes']) {
        const res = await ctx.api('POST', path, { body: { templateID: 'base', timeout: 60, metadata: { raw: tag } } })
        assert.equal(res.status, 201, `POST ${path}: ${res.status} ${res.text}`)
        const b = res.json
        if (b?.sandboxID) ctx.track(b.sandboxID)
        try {
          assert.match(b.sandboxID, ID_RE)
          for (const k of ['templateID', 'clientID', 'envdVersion', 'envdAccessToken']) {
            assert.equal(typeof b[k], 'string', `${path}: ${k} in ${res.text}`)
          }
          assert.equal(b.alias, 'base')
        } finally {
          const del = await ctx.api('DELETE', `/sandboxes/${b?.sandboxID}`)
          assert.equal(del.status, 204, `DELETE: ${del.status} ${del.text}`)
        }
      }
    })
  })
}
