// Isolation (issue 3, check 2): the official SDK against a real `paddock
// serve`, with the host looked at from Node (/proc, /sys, ip, nft). Every
// "cannot" is paired with a control showing the same thing works where it
// should (from the host, or from the sandbox itself), so a broken probe
// cannot pass for isolation. run.sh (suite `host`) runs it; by hand, as root:
//   node --test test/sdk/isolation.test.mjs
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { hostname } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { Sandbox } from 'e2b'
import {
  FakeInternet,
  HostServer,
  bridgeAddress,
  cgroupFile,
  envdOnHost,
  hostConfig,
  hostIPv4,
  hostProcessesMatching,
  nftInternetElements,
  ok,
  primaryIPv4,
  requireRoot,
  sh,
  shutdown,
  stats,
} from './lib/host.mjs'
import { sleep, uniq, waitFor } from './lib/util.mjs'

// curl's exit codes for "could not connect": 7 refused/unreachable, 28 timed out.
const CONNECT_FAILED = [7, 28]
const ENVD_CMD = '/.paddock/paddock envd'

let cfg
let server
let a // the sandbox under test
let b // its neighbour

/** Lines "pid|cmdline" of every process a sandbox sees in its /proc. */
async function processesSeenBy(sbx) {
  const out = await ok(sbx, `for d in /proc/[0-9]*; do echo "\${d#/proc/}|$(tr '\\0' ' ' < "$d/cmdline" 2>/dev/null)"; done`)
  return out
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const i = l.indexOf('|')
      return { pid: Number(l.slice(0, i)), cmd: l.slice(i + 1).trim() }
    })
}

/** The sandbox's own IPv4 address on eth0. */
async function addressOf(sbx) {
  const out = await ok(sbx, 'ip -4 -o addr show dev eth0')
  const m = out.match(/inet (\d+\.\d+\.\d+\.\d+)\//)
  assert.ok(m, `no IPv4 address on eth0: ${out}`)
  return m[1]
}

/**
 * From inside sbx, try every url in parallel with curl (timeout s) and
 * return { url: { rc, code, body } }.
 */
async function curlAll(sbx, urls, s = 3) {
  const script = urls
    .map((u, i) => `( body=$(curl -sS -m ${s} -w '\\n%{http_code}' ${JSON.stringify(u)} 2>/dev/null); echo "R${i} $? $(printf %s "$body" | tr '\\n' ' ')" ) &`)
    .join('\n')
  const r = await sh(sbx, `${script}\nwait`, { timeoutMs: (s + 10) * 1000 })
  const res = {}
  for (const line of r.stdout.split('\n')) {
    const m = line.match(/^R(\d+) (\d+) ?(.*)$/)
    if (!m) continue
    const parts = m[3].trim().split(' ')
    res[urls[Number(m[1])]] = { rc: Number(m[2]), code: parts.pop(), body: parts.join(' ') }
  }
  for (const u of urls) assert.ok(res[u], `no curl result for ${u}: ${JSON.stringify(r)}`)
  return res
}

function assertCannotConnect(results, what) {
  for (const [url, r] of Object.entries(results)) {
    assert.ok(
      CONNECT_FAILED.includes(r.rc) && r.code === '000',
      `${what}: ${url} should be unreachable (curl exit 7 or 28, no HTTP status), got exit ${r.rc}, status ${r.code}, body ${JSON.stringify(r.body)}`,
    )
  }
}

before(async () => {
  requireRoot()
  cfg = await hostConfig()
  server = new HostServer(cfg)
  await server.start()
  ;[a, b] = await Promise.all([
    Sandbox.create({ metadata: { suite: 'isolation', role: 'a' } }),
    Sandbox.create({ metadata: { suite: 'isolation', role: 'b' } }),
  ])
})

after(async () => {
  await shutdown(server)
})

describe('isolation', () => {
  test('a sandbox sees only its own processes: envd is PID 1, nothing of the host or of a neighbour', { timeout: 60_000 }, async () => {
    const u = uniq()
    const hostMarker = `paddock-host-marker-${u}`
    const nbrMarker = `paddock-nbr-marker-${u}`
    const ownMarker = `paddock-own-marker-${u}`
    const hostProc = spawn('sleep', ['600'], { argv0: hostMarker, stdio: 'ignore' })
    const nbr = await b.commands.run(`exec -a ${nbrMarker} sleep 600`, { background: true })
    const own = await a.commands.run(`exec -a ${ownMarker} sleep 600`, { background: true })
    try {
      // Controls: the host sees all three; the neighbour sees its own.
      await waitFor(() => [hostMarker, nbrMarker, ownMarker].every((m) => hostProcessesMatching(m).length === 1), {
        what: 'the three marker processes on the host',
      })
      await waitFor(async () => (await processesSeenBy(b)).some((p) => p.cmd.startsWith(nbrMarker)), { what: 'the neighbour seeing its marker' })
      // The host already matches the login shell that is about to exec the
      // marker (its command line holds the marker too): wait for the exec.
      let seen = []
      await waitFor(async () => (seen = await processesSeenBy(a)).some((p) => p.cmd.startsWith(ownMarker)), {
        what: 'the sandbox seeing its own marker',
        describe: () => seen.map((p) => `${p.pid} ${p.cmd}`).join('; '),
      })
      const listing = seen.map((p) => `${p.pid} ${p.cmd}`).join('\n')
      const pid1 = seen.find((p) => p.pid === 1)
      assert.ok(pid1?.cmd.startsWith(ENVD_CMD), `PID 1 inside should be envd, got ${JSON.stringify(pid1)}:\n${listing}`)
      assert.ok(seen.some((p) => p.cmd.startsWith(ownMarker)), `the sandbox's own marker should be visible:\n${listing}`)
      assert.ok(!seen.some((p) => p.cmd.includes(hostMarker)), `a host process is visible inside:\n${listing}`)
      assert.ok(!seen.some((p) => p.cmd.includes(nbrMarker)), `the neighbour's process is visible inside:\n${listing}`)
      assert.ok(!seen.some((p) => p.cmd.includes('paddock serve')), `the server is visible inside:\n${listing}`)
      const hostCount = spawnSync('sh', ['-c', 'ls -d /proc/[0-9]* | wc -l'], { encoding: 'utf8' }).stdout.trim()
      assert.ok(seen.length <= 8, `a fresh sandbox should see a handful of processes (envd, its commands), saw ${seen.length} (host has ${hostCount}):\n${listing}`)
      assert.equal((await ok(a, "tr '\\0' ' ' < /proc/1/cmdline")).trim(), `${ENVD_CMD} --listen 0.0.0.0:49983 --ready-fd 3`)
      const ps = await ok(a, 'ps -eo pid=,args=')
      assert.ok(!ps.includes(hostMarker) && !ps.includes(nbrMarker) && ps.includes(ownMarker), `ps inside:\n${ps}`)
    } finally {
      hostProc.kill('SIGKILL')
      await nbr.kill().catch(() => {})
      await own.kill().catch(() => {})
    }
  })

  test('host paths are invisible inside a sandbox, and its writes stay in its own layer', { timeout: 60_000 }, async () => {
    const u = uniq()
    const hostFiles = [`/root/paddock-host-file-${u}`, `/tmp/paddock-host-file-${u}`]
    for (const f of hostFiles) writeFileSync(f, 'host secret\n')
    const sbxFile = `/tmp/paddock-sbx-file-${u}`
    try {
      for (const f of hostFiles) assert.ok(existsSync(f), `control: ${f} exists on the host`)
      const probes = [...hostFiles, cfg.dataDir, cfg.workDir, cfg.bin, '/run/paddock/netns']
      const out = await ok(
        a,
        `for f in ${probes.map((p) => JSON.stringify(p)).join(' ')}; do test -e "$f" && echo "VISIBLE $f"; done
         find / \\( -path /proc -o -path /sys -o -path /dev \\) -prune -o -name 'paddock-host-file-${u}*' -print 2>/dev/null
         true`,
        { timeoutMs: 60_000 },
      )
      assert.equal(out, '', `host paths visible inside the sandbox:\n${out}`)
      assert.equal((await ok(a, 'hostname')).trim(), a.sandboxId, 'the sandbox has its own hostname')
      assert.notEqual(a.sandboxId, hostname())

      await a.files.write(sbxFile, 'sandbox data\n')
      assert.equal(await a.files.read(sbxFile), 'sandbox data\n', 'control: the sandbox reads its own file')
      assert.ok(!existsSync(sbxFile), `a sandbox write to ${sbxFile} reached the host's ${sbxFile}`)
      const upper = join(cfg.dataDir, 'runtime/sandboxes', a.sandboxId, 'upper', sbxFile)
      assert.equal(readFileSync(upper, 'utf8'), 'sandbox data\n', `the write should be in the sandbox's upper dir ${upper}`)
    } finally {
      for (const f of hostFiles) rmSync(f, { force: true })
    }
  })

  test("a neighbour's files are invisible", { timeout: 60_000 }, async () => {
    const u = uniq()
    const secrets = [`/home/user/nbr-secret-${u}`, `/tmp/nbr-secret-${u}`]
    for (const f of secrets) await b.files.write(f, `neighbour ${u}\n`)
    for (const f of secrets) {
      assert.equal(await b.files.read(f), `neighbour ${u}\n`, `control: the neighbour reads ${f}`)
      const upper = join(cfg.dataDir, 'runtime/sandboxes', b.sandboxId, 'upper', f)
      assert.ok(existsSync(upper), `control: ${f} is in the neighbour's layer on the host (${upper})`)
    }
    const out = await ok(
      a,
      `for f in ${secrets.join(' ')}; do test -e "$f" && echo "VISIBLE $f"; done
       find / \\( -path /proc -o -path /sys -o -path /dev \\) -prune -o -name 'nbr-secret-${u}*' -print 2>/dev/null
       true`,
      { timeoutMs: 60_000 },
    )
    assert.equal(out, '', `the neighbour's files are visible:\n${out}`)
    const viaApi = await a.files.exists(secrets[0])
    assert.equal(viaApi, false, 'files.exists in the other sandbox')
  })

  test('the control-plane port is unreachable from a sandbox on every host address, and reachable from the host', { timeout: 90_000 }, async () => {
    const gateway = bridgeAddress(cfg.bridge)
    const primary = primaryIPv4()
    const route = await ok(a, 'ip -4 route show default')
    assert.match(route, new RegExp(`default via ${gateway.replaceAll('.', '\\.')} `), `the sandbox's gateway is the bridge ${gateway}`)
    const addrs = [...new Set([gateway, primary, ...hostIPv4().map((x) => x.addr), '127.0.0.1'])]
    const urls = addrs.map((ip) => `http://${ip}:${cfg.port}/health`)
    // Control: the same URLs answer from the host (the server listens on 0.0.0.0).
    for (const url of urls) {
      const res = await fetch(url, { signal: AbortSignal.timeout(5000) })
      assert.equal(res.status, 200, `control: ${url} from the host`)
      await res.arrayBuffer()
    }
    // 127.0.0.1 inside is the sandbox's own loopback.
    assertCannotConnect(await curlAll(a, urls), 'control-plane port from a sandbox')
    const py = await sh(
      a,
      `python3 -c 'import socket,sys
for ip in sys.argv[1:]:
    try:
        socket.create_connection((ip, ${cfg.port}), 3).close(); print("CONNECTED", ip)
    except OSError as e:
        print("failed", ip, e.__class__.__name__)' ${gateway} ${primary}`,
      { timeoutMs: 30_000 },
    )
    assert.equal(py.exitCode, 0, py.stderr)
    assert.ok(!py.stdout.includes('CONNECTED'), `python connected to the control plane:\n${py.stdout}`)
    assert.equal(py.stdout.trim().split('\n').length, 2, py.stdout)
  })

  test('a sandbox cannot connect to another sandbox', { timeout: 90_000 }, async () => {
    const bAddr = await addressOf(b)
    const aAddr = await addressOf(a)
    assert.notEqual(aAddr, bAddr)
    const srv = await b.commands.run('cd /tmp && exec python3 -m http.server 8000 --bind 0.0.0.0', { background: true })
    try {
      // Control: the neighbour reaches its server on loopback and on its own address.
      await waitFor(async () => (await sh(b, 'curl -sf -m 2 -o /dev/null http://127.0.0.1:8000/')).exitCode === 0, {
        timeoutMs: 20_000,
        what: 'http.server in the neighbour',
      })
      const self = await curlAll(b, [`http://${bAddr}:8000/`, `http://127.0.0.1:8000/`])
      for (const [u, r] of Object.entries(self)) assert.equal(r.code, '200', `control: ${u} from the neighbour itself: ${JSON.stringify(r)}`)
      // From the other sandbox: neither its server nor its envd.
      assertCannotConnect(await curlAll(a, [`http://${bAddr}:8000/`, `http://${bAddr}:49983/health`]), 'the neighbour from a sandbox')
      // Nor the other way round.
      assertCannotConnect(await curlAll(b, [`http://${aAddr}:49983/health`]), 'a sandbox from the neighbour')
    } finally {
      await srv.kill().catch(() => {})
    }
  })

  test('a 64 GiB allocation fails and the sandbox survives', { timeout: 180_000 }, async (t) => {
    const id = a.sandboxId
    const envd0 = envdOnHost(id)
    assert.ok(envd0, 'envd runs')
    const limit = Number(cgroupFile(id, 'memory', 'memory.limit_in_bytes'))
    assert.ok(limit < 64 * 2 ** 30, `memory limit ${limit} should be far below 64 GiB`)
    const oomKills = () => Number(cgroupFile(id, 'memory', 'memory.oom_control').match(/oom_kill (\d+)/)?.[1] ?? NaN)
    const oom0 = oomKills()
    assert.ok(Number.isFinite(oom0), 'memory.oom_control reports oom_kill')

    // One 64 GiB block, filled (so a host with overcommit_memory=1 cannot
    // hand out untouched pages): refused outright (MemoryError) or killed.
    const once = await sh(a, `python3 -c 'b = bytearray(b"\\x01") * (64 << 30); print("allocated")'`, { timeoutMs: 60_000 })
    assert.notEqual(once.exitCode, 0, `a filled 64 GiB bytearray succeeded: ${JSON.stringify(once)}`)
    assert.ok(!once.stdout.includes('allocated'))
    assert.ok(/MemoryError/.test(once.stderr) || /killed/.test(once.error ?? ''), `want MemoryError or a kill: ${JSON.stringify(once)}`)

    // 64 GiB touched 64 MiB at a time: the sandbox's memory cgroup stops it.
    const t0 = Date.now()
    const touched = await sh(
      a,
      `python3 -c '
chunks = []
for i in range(1024):
    chunks.append(b"\\x01" * (64 << 20))
print("completed")'`,
      { timeoutMs: 120_000 },
    )
    t.diagnostic(`64 GiB touched: exit ${touched.exitCode} (${touched.error}) after ${Date.now() - t0} ms`)
    assert.notEqual(touched.exitCode, 0, `touching 64 GiB succeeded: ${JSON.stringify(touched)}`)
    assert.ok(!touched.stdout.includes('completed'))
    assert.ok(oomKills() > oom0, `the sandbox's memory cgroup should have OOM-killed the allocator (oom_kill ${oom0} -> ${oomKills()})`)
    const peak = Number(cgroupFile(id, 'memory', 'memory.max_usage_in_bytes'))
    assert.ok(peak <= limit, `peak usage ${peak} above the limit ${limit}`)

    // The sandbox survives: same envd, still serving.
    assert.deepEqual(envdOnHost(id), envd0, 'envd (PID 1) should be the same process')
    assert.equal(await ok(a, 'echo alive'), 'alive\n')
    assert.equal(await a.isRunning(), true)
  })

  test('a fork bomb is stopped by the pids limit; the neighbour and the host stay responsive', { timeout: 180_000 }, async (t) => {
    const bombSeconds = 15
    const victim = await Sandbox.create({ metadata: { suite: 'isolation', role: 'fork-bomb' } })
    try {
      const id = victim.sandboxId
      const pidsMax = Number(cgroupFile(id, 'pids', 'pids.max'))
      assert.ok(pidsMax > 0 && pidsMax < 100_000, `pids.max ${pidsMax}`)
      const hits = () => Number(cgroupFile(id, 'pids', 'pids.events').match(/max (\d+)/)?.[1] ?? NaN)
      const hits0 = hits()
      const bomb = victim.commands
        .run(forkBomb(bombSeconds), { timeoutMs: (bombSeconds + 60) * 1000 })
        .then(
          (r) => `exit ${r.exitCode}`,
          (err) => `failed: ${err.message}`,
        )
      const t0 = Date.now()
      let peak = 0
      const nbrLatency = []
      const nbrErrors = []
      const spawnLatency = []
      const healthLatency = []
      const healthBad = []
      let stop = false
      const sampler = (async () => {
        while (!stop) {
          try {
            peak = Math.max(peak, Number(cgroupFile(id, 'pids', 'pids.current')))
          } catch {}
          let s = Date.now()
          const r = spawnSync('true')
          spawnLatency.push(Date.now() - s)
          if (r.status !== 0) healthBad.push(`host spawn: ${r.error ?? r.status}`)
          s = Date.now()
          try {
            const res = await fetch(`${server.url}/health`, { signal: AbortSignal.timeout(30_000) })
            await res.arrayBuffer()
            if (res.status !== 200) healthBad.push(`GET /health ${res.status}`)
          } catch (err) {
            healthBad.push(`GET /health: ${err.message}`)
          }
          healthLatency.push(Date.now() - s)
          await sleep(250)
        }
      })()
      while (Date.now() - t0 < (bombSeconds + 3) * 1000) {
        const s = Date.now()
        try {
          await b.commands.run('true', { requestTimeoutMs: 30_000 })
          nbrLatency.push(Date.now() - s)
        } catch (err) {
          nbrErrors.push(`${err.message} after ${Date.now() - s} ms`)
        }
        await sleep(200)
      }
      stop = true
      await sampler
      const nbr = stats(nbrLatency)
      const spawnS = stats(spawnLatency)
      const healthS = stats(healthLatency)
      t.diagnostic(`pids: peak ${peak} of ${pidsMax}, forks refused ${hits() - hits0}`)
      t.diagnostic(`neighbour commands.run('true') during the bomb: n=${nbr.n} median ${nbr.median} ms, max ${nbr.max} ms`)
      t.diagnostic(`host spawn: median ${spawnS.median} ms, max ${spawnS.max} ms; GET /health: median ${healthS.median} ms, max ${healthS.max} ms`)

      // envd caps user tasks (RLIMIT_NPROC) TASK_RESERVE below pids.max so
      // it keeps tasks for itself; the bomb reaches that cap or the cgroup's.
      assert.ok(hits() > hits0 || peak >= 0.85 * (pidsMax - TASK_RESERVE), `the bomb should reach the sandbox's task limit (pids.events max ${hits0} -> ${hits()}), peak ${peak} of ${pidsMax}`)
      assert.ok(peak <= pidsMax, `peak ${peak} above pids.max ${pidsMax}`)
      assert.deepEqual(nbrErrors, [], 'the neighbour failed commands during the bomb')
      assert.ok(nbr.n >= 5, `too few neighbour commands completed (${nbr.n})`)
      assert.ok(nbr.max < 10_000 && nbr.median < 2_000, `neighbour latency during the bomb: median ${nbr.median} ms, max ${nbr.max} ms`)
      assert.deepEqual(healthBad, [], 'the host or the server failed during the bomb')
      assert.ok(spawnS.max < 10_000 && healthS.max < 10_000, `host latency: spawn max ${spawnS.max} ms, /health max ${healthS.max} ms`)
      // The bomb ends on its own; its processes go away.
      await waitFor(() => envdOnHost(id) === null || Number(cgroupFile(id, 'pids', 'pids.current')) < 20, {
        timeoutMs: 60_000,
        intervalMs: 250,
        what: 'the bomb to die out',
        describe: () => cgroupFile(id, 'pids', 'pids.current'),
      })
      t.diagnostic(`bomb command: ${await bomb}`)
    } finally {
      await Sandbox.kill(victim.sandboxId).catch(() => {})
    }
  })

  test("a fork bomb does not take the sandbox's envd down: PID 1 keeps serving during and after it", { timeout: 180_000 }, async (t) => {
    const bombSeconds = 20
    const victim = await Sandbox.create({ metadata: { suite: 'isolation', role: 'fork-bomb-envd' } })
    const id = victim.sandboxId
    const logPath = join(cfg.dataDir, 'runtime/sandboxes', id, 'envd.log')
    let envdLog = ''
    const keepLog = setInterval(() => {
      try {
        envdLog = readFileSync(logPath, 'utf8')
      } catch {}
    }, 50)
    try {
      const envd0 = envdOnHost(id)
      assert.ok(envd0, 'envd runs')
      const hits = () => Number(cgroupFile(id, 'pids', 'pids.events').match(/max (\d+)/)?.[1] ?? NaN)
      const hits0 = hits()
      const bomb = victim.commands.run(forkBomb(bombSeconds), { timeoutMs: (bombSeconds + 60) * 1000 }).then(
        (r) => `exit ${r.exitCode}`,
        (err) => `failed: ${err.message}`,
      )
      const pidsMax = Number(cgroupFile(id, 'pids', 'pids.max'))
      await waitFor(() => hits() > hits0 || Number(cgroupFile(id, 'pids', 'pids.current')) >= 0.85 * (pidsMax - TASK_RESERVE), {
        timeoutMs: bombSeconds * 1000,
        intervalMs: 100,
        what: 'the bomb to reach the pids limit',
        describe: () => `pids.current ${cgroupFile(id, 'pids', 'pids.current')}`,
      })
      // An agent keeps talking to its sandbox meanwhile, in waves of
      // concurrent requests while the bomb holds the limit. Requests may fail
      // (no process can start at the limit); envd itself must not.
      const t0 = Date.now()
      let sent = 0
      let succeeded = 0
      while (Date.now() - t0 < (bombSeconds - 6) * 1000 && envdOnHost(id)) {
        const wave = await Promise.allSettled(
          Array.from({ length: 16 }, (_, i) =>
            i % 3 === 0
              ? victim.files.write(`/tmp/under-bomb-${i}`, 'x'.repeat(1 << 20), { requestTimeoutMs: 20_000 })
              : i % 3 === 1
                ? victim.commands.run('true', { requestTimeoutMs: 20_000 })
                : victim.files.list('/usr/lib', { depth: 2, requestTimeoutMs: 20_000 }),
          ),
        )
        sent += wave.length
        succeeded += wave.filter((r) => r.status === 'fulfilled').length
        await sleep(500)
      }
      t.diagnostic(`requests during the bomb: ${succeeded}/${sent} succeeded`)
      await waitFor(() => envdOnHost(id) === null || Number(cgroupFile(id, 'pids', 'pids.current')) < 20, {
        timeoutMs: 60_000,
        intervalMs: 250,
        what: 'the bomb to die out',
      })
      t.diagnostic(`bomb command: ${await bomb}`)
      const envd1 = envdOnHost(id)
      const crash = envdLog.split('\n').filter((l) => /pthread_create|fatal error|SIGABRT|panic:/.test(l)).slice(0, 3).join(' | ')
      assert.deepEqual(envd1, envd0, `envd (PID 1) died under the fork bomb: ${crash || '(nothing in envd.log)'}`)
      assert.equal(await ok(victim, 'echo alive'), 'alive\n')
    } finally {
      clearInterval(keepLog)
      await Sandbox.kill(id).catch(() => {})
    }
  })

  test('allow_internet_access: false blocks egress; the default allows it', { timeout: 90_000 }, async () => {
    const inet = new FakeInternet()
    await inet.start()
    let closed
    try {
      // Control: "the internet" answers the host.
      const res = await fetch(inet.url, { signal: AbortSignal.timeout(5000) })
      assert.equal(await res.text(), inet.token, 'control: the stand-in internet answers the host')
      closed = await Sandbox.create({ allowInternetAccess: false, metadata: { suite: 'isolation', role: 'no-internet' } })
      const [open, shut] = await Promise.all([curlAll(a, [inet.url], 5), curlAll(closed, [inet.url], 5)])
      assert.equal(open[inet.url].code, '200', `default sandbox to ${inet.url}: ${JSON.stringify(open[inet.url])}`)
      assert.equal(open[inet.url].body, inet.token)
      assertCannotConnect(shut, 'allowInternetAccess: false')
      // The policy as the host holds it: only the open sandbox may leave.
      const allowed = nftInternetElements(cfg.bridge)
      assert.ok(allowed.includes(await addressOf(a)), `default sandbox in internet_addrs ${allowed}`)
      assert.ok(!allowed.includes(await addressOf(closed)), `closed sandbox in internet_addrs ${allowed}`)
      // It still works through the proxy.
      assert.equal(await ok(closed, 'echo still-here'), 'still-here\n')
    } finally {
      await inet.stop()
      if (closed) await Sandbox.kill(closed.sandboxId).catch(() => {})
    }
  })
})

/**
 * A bash fork bomb that stops forking after `seconds` (so it cannot outlive
 * the test): every call forks two more in a background pipeline.
 */
// TASK_RESERVE is how far below pids.max envd caps the tasks of the
// processes it starts (internal/envd/process: envdTaskReserve).
const TASK_RESERVE = 64

function forkBomb(seconds) {
  return `exec 2>/dev/null; end=$(( $(date +%s) + ${seconds} ))
f() { local n; printf -v n '%(%s)T' -1; (( n < end )) || return 0; f | f & }
f; sleep ${seconds + 1}; echo bomb-done`
}
