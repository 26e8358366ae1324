// Lifecycle robustness (issue 3, check 3): the official SDK against a real
// `paddock serve` that the tests SIGKILL and restart, with the host
// inventoried from Node (mounts, cgroups, veths, processes, network
// namespaces, files, nftables) before and after. run.sh (suite `host`) runs
// it; by hand, as root:  node --test test/sdk/robustness.test.mjs
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { NotFoundError, Sandbox } from 'e2b'
import { HostServer, assertClean, counts, envdOnHost, hostConfig, idsOnDisk, inventory, ok, requireRoot, shutdown, stats, tracesOf } from './lib/host.mjs'
import { describeError, sleep, uniq, waitFor } from './lib/util.mjs'

const CYCLES = Number(process.env.PADDOCK_HOST_CYCLES || 200)
const CONCURRENCY = 4

let cfg
let server

/** Every sandbox the API lists (all pages), as SandboxInfo. */
async function listAll(query) {
  const out = []
  const pager = Sandbox.list({ query, limit: 100 })
  while (pager.hasNext) out.push(...(await pager.nextItems()))
  return out
}

/** Kill whatever a failed test may have left, then require a clean host. */
async function cleanSlate() {
  await server.killAll()
  return assertClean(cfg, [], 'before the test')
}

before(async () => {
  requireRoot()
  cfg = await hostConfig()
  server = new HostServer(cfg)
  await server.start()
})

after(async () => {
  await shutdown(server)
})

describe('robustness', () => {
  test(`${CYCLES} create/kill cycles (concurrency ${CONCURRENCY}) leave nothing behind`, { timeout: 900_000 }, async (t) => {
    const before = counts(await cleanSlate())
    const ids = []
    const createMs = []
    const killMs = []
    const failures = []
    let next = 0
    const t0 = Date.now()
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (next < CYCLES) {
          const i = next++
          try {
            let s = Date.now()
            const sbx = await Sandbox.create({ metadata: { suite: 'robustness', cycle: String(i) } })
            createMs.push(Date.now() - s)
            ids.push(sbx.sandboxId)
            // Every few cycles the sandbox also runs something first.
            if (i % 5 === 0) assert.equal(await ok(sbx, 'echo $((6*7))'), '42\n')
            s = Date.now()
            await sbx.kill()
            killMs.push(Date.now() - s)
          } catch (err) {
            failures.push(`cycle ${i}: ${describeError(err)}`)
          }
        }
      }),
    )
    const total = Date.now() - t0
    const c = stats(createMs)
    const k = stats(killMs)
    t.diagnostic(`${CYCLES} cycles in ${(total / 1000).toFixed(1)} s; create median ${c.median} ms, p99 ${c.p99} ms; kill median ${k.median} ms, p99 ${k.p99} ms`)
    assert.deepEqual(failures, [], 'cycles that failed')
    assert.equal(new Set(ids).size, CYCLES, 'every cycle created a distinct sandbox')

    const listed = (await listAll()).map((s) => s.sandboxId).filter((id) => ids.includes(id))
    assert.deepEqual(listed, [], 'killed sandboxes still listed')
    // Kill is synchronous, but give stragglers (a process exiting) a moment
    // before calling anything a leak.
    let inv
    await waitFor(() => Object.values((inv = inventory(cfg, ids))).every((v) => v.length === 0), {
      timeoutMs: 10_000,
      intervalMs: 200,
      what: 'the host to be clean',
      describe: () => JSON.stringify(inv),
    }).catch(() => {})
    const afterCounts = counts(inventory(cfg, ids))
    t.diagnostic(`before ${JSON.stringify(before)}, after ${JSON.stringify(afterCounts)}`)
    assert.deepEqual(afterCounts, before, 'host resources before and after the cycles')
    assertClean(cfg, ids, `after ${CYCLES} cycles`)
  })

  test('kill -9 of the server with live sandboxes: a restart adopts them and they stay usable, with their timeouts', { timeout: 300_000 }, async (t) => {
    await cleanSlate()
    const u = uniq()
    const marker = `paddock-adopt-marker-${u}`
    const file = `/home/user/adopt-${u}.txt`
    const keeper = await Sandbox.create({ timeoutMs: 300_000, metadata: { suite: 'robustness', role: 'keeper', run: u } })
    const shortLived = await Sandbox.create({ timeoutMs: 25_000, metadata: { suite: 'robustness', role: 'short', run: u } })
    const ids = [keeper.sandboxId, shortLived.sandboxId]
    try {
      await keeper.files.write(file, `written before the crash ${u}\n`)
      const bg = await keeper.commands.run(`exec -a ${marker} sleep 600`, { background: true })
      const shortEnd = (await Sandbox.getInfo(shortLived.sandboxId)).endAt.getTime()
      const envds = ids.map(envdOnHost)
      assert.ok(envds.every(Boolean), 'both envds run')

      const t0 = Date.now()
      const status = await server.kill9()
      assert.equal(status.signal, 'SIGKILL')
      // Sandboxes outlive the server.
      assert.deepEqual(ids.map(envdOnHost), envds, 'sandboxes should keep running while the server is down')
      await server.start()
      t.diagnostic(`server back ${Date.now() - t0} ms after the SIGKILL`)

      const listed = await listAll({ metadata: { run: u } })
      assert.deepEqual(listed.map((s) => s.sandboxId).sort(), [...ids].sort(), 'both sandboxes listed after the restart')
      for (const s of listed) assert.equal(s.state, 'running', `${s.sandboxId} state`)

      const again = await Sandbox.connect(keeper.sandboxId)
      assert.equal(await again.files.read(file), `written before the crash ${u}\n`)
      const procs = await again.commands.list()
      assert.ok(
        procs.some((p) => p.pid === bg.pid),
        `the background process ${bg.pid} should still be listed: ${JSON.stringify(procs.map((p) => [p.pid, p.cmd, p.args]))}`,
      )
      assert.ok((await ok(again, 'ps -eo args=')).includes(marker), 'the background process still runs')
      assert.equal(await ok(again, 'echo adopted'), 'adopted\n')
      assert.deepEqual(envdOnHost(keeper.sandboxId), envds[0], 'the same envd (not restarted)')
      // The old object works too: same envd token and routing.
      assert.equal(await ok(keeper, 'cat ' + file), `written before the crash ${u}\n`)

      // The short-lived sandbox still ends at its end time, now under the new server.
      const infoAfter = await Sandbox.getInfo(shortLived.sandboxId)
      assert.equal(infoAfter.endAt.getTime(), shortEnd, 'endAt survives the restart')
      assert.ok(Date.now() < shortEnd, `the restart took too long to check expiry (${Date.now() - shortEnd} ms past the end)`)
      await sleep(Math.max(0, shortEnd - Date.now()) + 3_000)
      await waitFor(async () => !(await Sandbox.list({ query: { metadata: { role: 'short', run: u } } }).nextItems()).length, {
        timeoutMs: 15_000,
        what: 'the short-lived sandbox to expire',
      })
      const gone = await Sandbox.getInfo(shortLived.sandboxId).then(
        (i) => `still there: ${JSON.stringify(i)}`,
        (err) => err,
      )
      assert.ok(gone instanceof NotFoundError, `getInfo after expiry: ${describeError(gone)}`)
      assert.deepEqual(tracesOf(cfg, [shortLived.sandboxId]), [], 'the expired sandbox left traces on the host')
      // The adopted keeper's timeout can still be changed.
      await again.setTimeout(120_000)
      const kept = await Sandbox.getInfo(keeper.sandboxId)
      assert.ok(Math.abs(kept.endAt.getTime() - (Date.now() + 120_000)) < 10_000, `setTimeout on the adopted sandbox: endAt ${kept.endAt.toISOString()}`)
    } finally {
      for (const id of ids) await Sandbox.kill(id).catch(() => {})
    }
    assertClean(cfg, ids, 'after killing the adopted sandboxes')
  })

  // Two moments to SIGKILL at: while the first sandboxes are inside the
  // runtime (all half-created), and right after the first create returned
  // (one whole sandbox to adopt, the rest half-created).
  const moments = [
    { name: 'as the first sandboxes reach the runtime', stagger: 60, when: ({ onDisk }) => onDisk() >= 2 },
    // (and once another is on disk: a fast create may return before the
    // next one reached the runtime)
    { name: 'right after the first create returns', stagger: 60, when: ({ onDisk, returned }) => returned() >= 1 && onDisk() > returned() },
  ]
  for (const m of moments) {
    test(`a server killed mid-create (${m.name}) leaves nothing behind after a restart`, { timeout: 300_000 }, (t) => midCreate(t, m))
  }
})

/** One mid-create round: n staggered creates, SIGKILL at moment m, restart, check. */
async function midCreate(t, m) {
  const beforeCounts = counts(await cleanSlate())
  const n = 6
  const creates = []
  let returnedCount = 0
  // Launched in the background, so the kill can land while some have not
  // even been sent, some wait in the API and some are in the runtime.
  const launching = (async () => {
    for (let i = 0; i < n; i++) {
      // Settled right away: most of these reject when the server dies.
      creates.push(
        Sandbox.create({ metadata: { suite: 'robustness', role: 'mid-create' }, requestTimeoutMs: 60_000 }).then(
          (value) => (returnedCount++, { status: 'fulfilled', value }),
          (reason) => ({ status: 'rejected', reason }),
        ),
      )
      await sleep(m.stagger)
    }
  })()
  await waitFor(() => m.when({ onDisk: () => idsOnDisk(cfg.dataDir).size, returned: () => returnedCount }), {
    timeoutMs: 30_000,
    intervalMs: 2,
    what: `the moment to kill (${m.name})`,
  })
  await server.kill9()
  await launching
  const results = await Promise.all(creates)
  const returned = results.filter((r) => r.status === 'fulfilled').map((r) => r.value.sandboxId)
  const failed = results.filter((r) => r.status === 'rejected').length
  const onDisk = [...idsOnDisk(cfg.dataDir)]
  const half = onDisk.filter((id) => !returned.includes(id))
  t.diagnostic(`${returned.length} creates returned, ${failed} failed; ${onDisk.length} sandboxes on disk at the kill, ${half.length} not returned to the client`)
  t.diagnostic(`on the host while the server is down: ${JSON.stringify(counts(inventory(cfg, onDisk)))}`)
  assert.ok(failed >= 1, 'the kill should have interrupted at least one create')
  assert.ok(half.length >= 1, `at least one sandbox should have been half-created at the kill (on disk: ${onDisk}, returned: ${returned})`)

  await server.start()
  // Whatever is listed is a whole, usable sandbox (one that finished before the kill).
  const listed = (await listAll()).map((s) => s.sandboxId)
  for (const id of listed) {
    assert.ok(onDisk.includes(id), `listed sandbox ${id} was not on disk at the kill`)
    const sbx = await Sandbox.connect(id)
    assert.equal(await ok(sbx, 'echo whole'), 'whole\n', `listed sandbox ${id} should be usable`)
  }
  for (const id of returned) assert.ok(listed.includes(id), `a sandbox whose create returned (${id}) should be adopted`)
  const reaped = onDisk.filter((id) => !listed.includes(id))
  t.diagnostic(`after the restart: ${listed.length} adopted, ${reaped.length} reaped`)
  assert.ok(reaped.length >= 1, 'the half-created sandboxes should be reaped')
  for (const id of reaped) {
    const info = await Sandbox.getInfo(id).then(
      (i) => i,
      (err) => err,
    )
    assert.ok(info instanceof NotFoundError, `half-created ${id}: getInfo should be NotFound, got ${describeError(info)}`)
  }
  // The reaped ones are gone from the host already; then kill the adopted.
  assert.deepEqual(tracesOf(cfg, reaped), [], 'half-created sandboxes left on the host after the restart')
  for (const id of listed) await Sandbox.kill(id)
  const afterCounts = counts(assertClean(cfg, onDisk, 'after the restart and killing the adopted sandboxes'))
  assert.deepEqual(afterCounts, beforeCounts)
}
