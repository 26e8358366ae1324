// The templates suite: the official SDK's Template API (build, cache, errors,
// exists/tags, teams) and `paddock template build` from a Dockerfile, against
// a real `paddock serve` this file starts with its own data dir, port,
// bridge and subnet (and tears down afterwards). Run as root:
//   PADDOCK_BIN=bin/paddock node --test test/sdk/templates.test.mjs
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { execFile, execFileSync, spawn } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, chmodSync, openSync } from 'node:fs'
import { createServer } from 'node:net'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { BuildError, Sandbox, Template, waitForPort } from 'e2b'
import { sleep, uniq } from './lib/util.mjs'

const here = fileURLToPath(new URL('.', import.meta.url))
const bin = resolve(process.env.PADDOCK_BIN || join(here, '../../bin/paddock'))
const outDir = process.env.PADDOCK_SDK_OUT || join(here, '.out')
const run = uniq(3)
const bridge = `pdtpl${process.pid % 100000}`

const srv = { proc: null, url: '', port: 0, root: '', data: '', key: '', subnet: '' }
const sandboxes = new Set() // IDs to kill at the end, whatever happens
const keys = {} // team → API key

function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer()
    s.once('error', fail)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => ok(port))
    })
  })
}

/** A /24 in 10.240-247.x that no route or address of this host overlaps. */
function pickSubnet() {
  const seen = execFileSync('ip', ['-4', '-o', 'addr', 'show'], { encoding: 'utf8' }) +
    execFileSync('ip', ['-4', '-o', 'route', 'show', 'table', 'all'], { encoding: 'utf8' })
  for (let i = 0; i < 2048; i++) {
    const k = (process.pid * 7919 + i) % 2048
    const prefix = `10.${240 + Math.floor(k / 256)}.${k % 256}.`
    if (!seen.includes(prefix)) return `${prefix}0/24`
  }
  throw new Error('no free /24 in 10.240.0.0/13 for the test bridge')
}

async function startServer() {
  const log = openSync(join(outDir, 'templates-serve.log'), 'a')
  srv.proc = spawn(bin, ['serve', '--data-dir', srv.data, '--listen', `127.0.0.1:${srv.port}`,
    '--bridge', bridge, '--subnet', srv.subnet], { stdio: ['ignore', log, log] })
  const deadline = Date.now() + 600_000
  while (Date.now() < deadline) {
    if (srv.proc.exitCode !== null) throw new Error(`paddock serve exited (${srv.proc.exitCode}); see ${outDir}/templates-serve.log`)
    try {
      const res = await fetch(`${srv.url}/health`)
      if (res.status === 200) return
    } catch {}
    await sleep(100)
  }
  throw new Error('paddock serve did not become healthy within 600 s')
}

async function stopServer() {
  const p = srv.proc
  if (!p || p.exitCode !== null) return
  const exited = new Promise((ok) => p.once('exit', ok))
  p.kill('SIGTERM')
  await Promise.race([exited, sleep(15_000)])
  if (p.exitCode === null) p.kill('SIGKILL')
  await exited
}

async function restartServer() {
  await stopServer()
  await startServer()
}

/** Calls the Platform API with a team's key; returns {status, body}. */
async function api(method, path, { key = keys.main, body } = {}) {
  const res = await fetch(srv.url + path, {
    method,
    headers: { 'X-API-Key': key, ...(body ? { 'Content-Type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  })
  const text = await res.text()
  let json
  try {
    json = text ? JSON.parse(text) : undefined
  } catch {}
  return { status: res.status, body: json ?? text }
}

async function create(template, opts = {}) {
  const sbx = await Sandbox.create(template, { timeoutMs: 300_000, ...opts })
  sandboxes.add(sbx.sandboxId)
  return sbx
}

async function kill(sbx) {
  await sbx.kill()
  sandboxes.delete(sbx.sandboxId)
}

function cli(args, { timeout = 600_000 } = {}) {
  return new Promise((ok) => {
    const t0 = Date.now()
    execFile(bin, args, { timeout, env: { ...process.env, E2B_API_URL: srv.url, E2B_API_KEY: keys.main } }, (err, stdout, stderr) => {
      ok({ code: err ? (err.code ?? 1) : 0, stdout, stderr, ms: Date.now() - t0 })
    })
  })
}

/** A build context directory with the given files. */
function context(files) {
  const dir = mkdtempSync(join(srv.root, 'ctx-'))
  for (const [p, content] of Object.entries(files)) {
    mkdirSync(join(dir, p, '..'), { recursive: true })
    writeFileSync(join(dir, p), content)
  }
  return dir
}

/** Layer directories under the data dir holding path with that content. */
function layersWith(path, content) {
  const root = join(srv.data, 'layers')
  return readdirSync(root).filter((d) => /^[0-9a-f]{64}$/.test(d)).filter((d) => {
    const p = join(root, d, path)
    return existsSync(p) && readFileSync(p, 'utf8') === content
  })
}

before(async () => {
  if (process.getuid() !== 0) throw new Error('the templates suite needs root (it runs paddock serve)')
  if (!existsSync(bin)) throw new Error(`${bin} not found: run 'make build'`)
  mkdirSync(outDir, { recursive: true })
  srv.root = mkdtempSync('/tmp/paddock-sdk-tpl-')
  chmodSync(srv.root, 0o711)
  srv.data = join(srv.root, 'data')
  srv.port = await freePort()
  srv.url = `http://127.0.0.1:${srv.port}`
  srv.subnet = pickSubnet()
  await startServer()
  keys.main = readFileSync(join(srv.data, 'initial-api-key'), 'utf8').trim()
  keys.other = execFileSync(bin, ['apikey', 'create', '--team', `other-${run}`, '--data-dir', srv.data], { encoding: 'utf8' }).trim()
  assert.match(keys.other, /^e2b_[0-9a-f]{40}$/)
  process.env.E2B_API_URL = srv.url
  process.env.E2B_SANDBOX_URL = srv.url
  process.env.E2B_API_KEY = keys.main
  delete process.env.E2B_DEBUG
})

after(async () => {
  try {
    if (srv.proc && srv.proc.exitCode === null) {
      for (const id of sandboxes) await Sandbox.kill(id).catch(() => {})
    }
  } finally {
    await stopServer()
    try {
      execFileSync('ip', ['link', 'del', bridge], { stdio: 'ignore' })
    } catch {}
    try {
      execFileSync('nft', ['delete', 'table', 'inet', `paddock_${bridge}`], { stdio: 'ignore' })
    } catch {}
    if (srv.root) rmSync(srv.root, { recursive: true, force: true })
  }
})

describe('Template.build (SDK)', { timeout: 900_000 }, () => {
  const name = `app-${run}`
  let ctxDir
  let first // {info, ms, logs}
  const template = () =>
    Template({ fileContextPath: ctxDir })
      .fromTemplate('base')
      .aptInstall(['jq']) // RUN as root with internet access through the host's NAT
      .runCmd('echo "ran as $(whoami) in $(pwd)" > /home/user/run.txt')
      .runCmd('mkdir -p /opt/data && echo root-made > /opt/data/x', { user: 'root' })
      .copy('app', '/home/user/app/')
      .setEnvs({ GREETING: 'hello world', SECOND: 'two' })
      .setWorkdir('/home/user/app')
      .setStartCmd('python3 -m http.server 8080 --bind 127.0.0.1', waitForPort(8080))

  async function timedBuild(t, n) {
    const logs = []
    const t0 = Date.now()
    const info = await Template.build(t, n, { onBuildLogs: (e) => logs.push(e) })
    return { info, ms: Date.now() - t0, logs: logs.map((e) => e.message) }
  }

  test('builds every step kind (apt over the network too); a sandbox from it has the files, env, workdir and running start command', async () => {
    ctxDir = context({ 'app/hello.txt': 'hello from copy\n', 'app/sub/nested.txt': 'nested\n' })
    first = await timedBuild(template(), name)
    assert.match(first.info.templateId, /^[a-z0-9]{20}$/)
    const stepLines = first.logs.filter((m) => /^(CACHED )?\[builder \d+\/\d+\]/.test(m))
    assert.equal(stepLines.length, 6, `one line per step:\n${first.logs.join('\n')}`)
    assert.ok(stepLines.every((m) => !m.startsWith('CACHED')), `a first build runs every step:\n${stepLines.join('\n')}`)

    const sbx = await create(name)
    const r = await sbx.commands.run(
      'pwd; cat /home/user/run.txt hello.txt sub/nested.txt /opt/data/x; echo "G=$GREETING S=$SECOND"; stat -c %U hello.txt; ' +
        'curl -s http://127.0.0.1:8080/hello.txt; ps -o user=,args= -C python3; echo \'{"a":[1,2]}\' | jq -c .a')
    const out = r.stdout.split('\n')
    assert.equal(out[0], '/home/user/app', 'workdir')
    assert.equal(out[1], 'ran as user in /home/user', 'RUN steps run as the template user by default')
    assert.equal(out[2], 'hello from copy')
    assert.equal(out[3], 'nested')
    assert.equal(out[4], 'root-made', 'RUN as root')
    assert.equal(out[5], 'G=hello world S=two', 'ENV')
    assert.equal(out[6], 'user', 'COPY gives files to the current user')
    assert.equal(out[7], 'hello from copy', 'the start command serves the workdir')
    assert.match(out[8], /^user\s+python3 -m http.server 8080/, 'the start command runs as the template user')
    assert.equal(out[9], '[1,2]', 'the package apt installed during the build')
    await kill(sbx)
  })

  test('a second identical build takes every step from the cache and is at least 5x faster', async () => {
    assert.ok(first, 'needs the first build')
    const second = await timedBuild(template(), name)
    assert.equal(second.info.templateId, first.info.templateId)
    assert.notEqual(second.info.buildId, first.info.buildId)
    const stepLines = second.logs.filter((m) => /^(CACHED )?\[builder \d+\/\d+\]/.test(m))
    assert.equal(stepLines.length, 6, second.logs.join('\n'))
    assert.ok(stepLines.every((m) => m.startsWith('CACHED ')), `every step cached:\n${stepLines.join('\n')}`)
    assert.ok(second.logs.some((m) => m.startsWith('CACHED [finalize]')), second.logs.join('\n'))
    assert.ok(second.logs.includes("Skipping upload of 'app', already cached"), 'the files were not uploaded again')
    console.log(`# first build ${first.ms} ms, cached build ${second.ms} ms (${(first.ms / second.ms).toFixed(1)}x)`)
    assert.ok(first.ms >= 5 * second.ms, `cached build ${second.ms} ms is not 5x faster than ${first.ms} ms`)
    // The new build is the default one now and works.
    const sbx = await create(name)
    assert.equal((await sbx.files.read('/home/user/app/hello.txt')), 'hello from copy\n')
    await kill(sbx)
  })

  test('a failing RUN step ends in BuildError naming the step', async () => {
    const bad = `bad-${run}`
    const t = Template().fromTemplate('base').runCmd('echo fine').runCmd('echo about to fail && exit 3')
    await assert.rejects(Template.build(t, bad), (err) => {
      assert.ok(err instanceof BuildError, `got ${err?.name}: ${err?.message}`)
      assert.match(err.message, /step 2 RUN echo about to fail && exit 3/)
      assert.match(err.message, /exited with code 3/)
      assert.match(err.stack ?? '', /templates\.test\.mjs/, 'the SDK maps the failing step to its call site')
      return true
    })
    assert.equal(await Template.exists(bad), false, 'a failed first build creates no template')
  })

  test('an unsupported base image is refused before any work', async () => {
    const t0 = Date.now()
    await assert.rejects(Template.build(Template().fromImage('ubuntu:22.04').runCmd('true'), `img-${run}`), (err) => {
      assert.ok(err instanceof BuildError, `${err?.name}: ${err?.message}`)
      assert.match(err.message, /ubuntu:22.04.*not supported.*e2bdev\/base/s)
      return true
    })
    assert.ok(Date.now() - t0 < 10_000, 'refused at once')
  })

  test('exists, assignTags, getTags, removeTags and tagged builds', async () => {
    assert.ok(first, 'needs the first build')
    assert.equal(await Template.exists(name), true)
    assert.equal(await Template.exists(`nope-${run}`), false)
    assert.equal(await Template.exists('base'), true)

    const assigned = await Template.assignTags(`${name}:default`, ['stable', 'v1'])
    assert.deepEqual(assigned.tags, ['stable', 'v1'])
    let tags = await Template.getTags(first.info.templateId)
    const byTag = Object.fromEntries(tags.map((t) => [t.tag, t.buildId]))
    assert.deepEqual(Object.keys(byTag).sort(), ['default', 'stable', 'v1'])
    assert.equal(byTag.stable, byTag.default)
    assert.equal(byTag.stable, assigned.buildId)
    assert.ok(tags.every((t) => t.createdAt instanceof Date && !isNaN(t.createdAt)))

    // A build under another tag leaves the default one alone.
    const t2 = Template({ fileContextPath: ctxDir }).fromTemplate(`${name}:stable`).runCmd('echo v2 > /home/user/version.txt')
    const b2 = await Template.build(t2, `${name}:v2`)
    assert.equal(b2.templateId, first.info.templateId)
    tags = await Template.getTags(name)
    const now = Object.fromEntries(tags.map((t) => [t.tag, t.buildId]))
    assert.equal(now.v2, b2.buildId)
    assert.equal(now.default, byTag.default)
    const s2 = await create(`${name}:v2`)
    assert.equal(await s2.files.read('/home/user/version.txt'), 'v2\n')
    assert.equal(await s2.files.read('/home/user/app/hello.txt'), 'hello from copy\n', 'built on the stable tag')
    await kill(s2)
    const sDefault = await create(name)
    assert.equal(await sDefault.files.exists('/home/user/version.txt'), false, 'the default tag still points to the old build')
    await kill(sDefault)
    const byBuild = await create(`${name}:${b2.buildId}`)
    assert.equal(await byBuild.files.read('/home/user/version.txt'), 'v2\n', 'name:buildID works too')
    await kill(byBuild)

    await Template.removeTags(name, 'stable')
    tags = await Template.getTags(first.info.templateId)
    assert.deepEqual(tags.map((t) => t.tag).sort(), ['default', 'v1', 'v2'])
    await assert.rejects(create(`${name}:stable`), /404|not found/i)
    await assert.rejects(Template.removeTags(name, 'default'), /default/)
    await assert.rejects(Template.assignTags(`${name}:nope`, 'x'), /404|no tag/i)
  })

  test('teams: a private template is invisible to another team; a public one is usable', async () => {
    assert.ok(first, 'needs the first build')
    const other = { apiKey: keys.other }
    const id = first.info.templateId
    assert.equal((await api('GET', `/templates/aliases/${name}`, { key: keys.other })).status, 403)
    assert.equal(await Template.exists(name, other), true, 'exists (403 means it exists) as the SDK documents')
    await assert.rejects(create(name, other), /403|404|not accessible|not found/i)
    await assert.rejects(create(id, other), /403|404|not accessible|not found/i)
    assert.equal((await api('GET', `/templates/${id}`, { key: keys.other })).status, 404)
    await assert.rejects(Template.getTags(id, other), /404|not found/i)
    const otherList = await api('GET', '/templates', { key: keys.other })
    assert.equal(otherList.status, 200)
    assert.ok(!otherList.body.some((t) => t.templateID === id), 'listed for another team')
    assert.ok((await api('GET', '/templates')).body.some((t) => t.templateID === id && t.aliases.includes(name)))
    // The other team cannot build under the name either.
    await assert.rejects(Template.build(Template().fromTemplate('base').runCmd('true'), name, other), /409|taken/i)

    const pub = await api('PATCH', `/v2/templates/${id}`, { body: { public: true } })
    assert.equal(pub.status, 200)
    assert.deepEqual(pub.body.names, [name])
    const alias = await api('GET', `/templates/aliases/${name}`, { key: keys.other })
    assert.equal(alias.status, 200)
    assert.deepEqual(alias.body, { templateID: id, public: true })
    const sbx = await create(name, other)
    assert.equal(await sbx.files.read('/home/user/app/hello.txt'), 'hello from copy\n')
    await kill(sbx)
    assert.equal((await api('DELETE', `/templates/${id}`, { key: keys.other })).status, 404, 'public is not shared ownership')
    await assert.rejects(Template.assignTags(`${name}:default`, 'theirs', other), /404|not found/i)
    assert.equal((await api('PATCH', `/v2/templates/${id}`, { key: keys.other, body: { public: false } })).status, 404)

    assert.equal((await api('PATCH', `/templates/${id}`, { body: { public: false } })).status, 200)
    await assert.rejects(create(name, other), /403|404|not accessible|not found/i)
  })

  test('status paging: logsOffset pages of at most 100 entries, always an array', async () => {
    assert.ok(first, 'needs the first build')
    const { templateId, buildId } = first.info
    const p0 = await api('GET', `/templates/${templateId}/builds/${buildId}/status?logsOffset=0&limit=3`)
    assert.equal(p0.status, 200)
    assert.equal(p0.body.status, 'ready')
    assert.equal(p0.body.logEntries.length, 3)
    assert.ok(Array.isArray(p0.body.logs))
    const all = []
    for (;;) {
      const page = await api('GET', `/templates/${templateId}/builds/${buildId}/status?logsOffset=${all.length}`)
      assert.ok(page.body.logEntries.length <= 100, 'at most 100 entries per page')
      if (page.body.logEntries.length === 0) break
      all.push(...page.body.logEntries)
    }
    const n = all.length
    assert.ok(n > 3, `${n} log entries`)
    assert.ok(all.some((e) => /^\[builder 1\/6\] RUN apt-get update/.test(e.message) && e.step === '1'), 'step lines carry their step')
    const p1 = await api('GET', `/templates/${templateId}/builds/${buildId}/status?logsOffset=1&limit=2`)
    assert.deepEqual(p1.body.logEntries, all.slice(1, 3))
    const end = await api('GET', `/templates/${templateId}/builds/${buildId}/status?logsOffset=${n}`)
    assert.deepEqual(end.body.logEntries, [])
    const st = await Template.getBuildStatus({ templateId, buildId }, { logsOffset: n })
    assert.equal(st.status, 'ready')
    assert.deepEqual(st.logEntries, [])
    assert.equal((await api('GET', `/templates/${templateId}/builds/${buildId}/status?limit=101`)).status, 400)
    assert.equal((await api('GET', `/templates/${templateId}/builds/${buildId}/status`, { key: keys.other })).status, 404)
  })
})

describe('template lifecycle', { timeout: 900_000 }, () => {
  test('deleting a template in use is refused; unreferenced layers are collected, never those of running sandboxes', async () => {
    const gc = `gc-${run}`
    const del = `del-${run}`
    const b1 = await Template.build(Template().fromTemplate('base').runCmd(`echo gc-one-${run} > /home/user/gc.txt`), gc)
    const keep = await create(gc) // runs on the first build's layer
    await Template.build(Template().fromTemplate('base').runCmd(`echo gc-two-${run} > /home/user/gc.txt`), gc)
    const dl = await Template.build(Template().fromTemplate('base').runCmd(`echo del-${run} > /home/user/del.txt`), del)
    const inUse = await create(del)

    const [l1] = layersWith('home/user/gc.txt', `gc-one-${run}\n`)
    const [l2] = layersWith('home/user/gc.txt', `gc-two-${run}\n`)
    const [l3] = layersWith('home/user/del.txt', `del-${run}\n`)
    assert.ok(l1 && l2 && l3, 'each build committed its layer')

    const refused = await api('DELETE', `/templates/${dl.templateId}`)
    assert.equal(refused.status, 409)
    assert.match(refused.body.message, /used by 1 sandbox/)
    assert.equal(await Template.exists(del), true)
    await kill(inUse)
    assert.equal((await api('DELETE', `/templates/${dl.templateId}`)).status, 204)
    assert.equal(await Template.exists(del), false)
    assert.equal((await api('DELETE', `/templates/${dl.templateId}`)).status, 404)

    // A restart collects unreferenced layers at once.
    await restartServer()
    const layers = join(srv.data, 'layers')
    assert.equal(existsSync(join(layers, l3)), false, "the deleted template's layer was collected")
    assert.equal(existsSync(join(layers, l2)), true, 'the current build of a template is kept')
    assert.equal(existsSync(join(layers, l1)), true, 'a layer a running sandbox uses is kept')
    const again = await Sandbox.connect(keep.sandboxId)
    assert.equal(await again.files.read('/home/user/gc.txt'), `gc-one-${run}\n`, 'the running sandbox still works')
    await kill(again)
    await restartServer()
    assert.equal(existsSync(join(layers, l1)), false, 'once its sandbox is gone, the old build layer is collected')
    const fresh = await create(gc)
    assert.equal(await fresh.files.read('/home/user/gc.txt'), `gc-two-${run}\n`)
    await kill(fresh)
    assert.ok(b1.buildId)
  })
})

describe('start command on create', { timeout: 900_000 }, () => {
  test('a start command that fails fails the create clearly and leaves no sandbox', async () => {
    const n = `start-${run}`
    const t = Template().fromTemplate('base')
      .setStartCmd('[ -z "$BREAK_START" ] || { echo broken on purpose >&2; exit 5; }; exec python3 -m http.server 8081', waitForPort(8081))
    await Template.build(t, n)
    const ok = await create(n)
    assert.equal((await ok.commands.run('ss -Htln sport = :8081 | wc -l')).stdout.trim(), '1')
    await kill(ok)

    const runtimeDirs = () => readdirSync(join(srv.data, 'runtime', 'sandboxes')).sort()
    const dirsBefore = runtimeDirs()
    const before = (await Sandbox.list().nextItems()).map((s) => s.sandboxId)
    await assert.rejects(create(n, { envs: { BREAK_START: '1' } }), (err) => {
      assert.match(err.message, /start command .* failed before the ready command .* passed: exited with code 5/)
      return true
    })
    const afterIds = (await Sandbox.list().nextItems()).map((s) => s.sandboxId)
    assert.deepEqual(afterIds.filter((id) => !before.includes(id)), [], 'the failed sandbox is gone')
    assert.deepEqual(runtimeDirs(), dirsBefore, 'nothing of it is left in the runtime')
  })
})

describe('paddock template build (CLI, Dockerfile)', { timeout: 900_000 }, () => {
  const dockerfile = `# syntax=docker/dockerfile:1
ARG PYVER=3.11
FROM python:\${PYVER}-slim
ARG GREETING=hello
# comments and line continuations
ENV APP_HOME=/opt/app \\
    MODE="production mode"
LABEL org.example.note="ignored"
WORKDIR $APP_HOME
COPY --chown=user:user src/ ./src/
ADD run.sh /usr/local/bin/run-me
RUN chmod +x /usr/local/bin/run-me && \\
    echo "$GREETING world" > /opt/app/greeting.txt
USER user
EXPOSE 8000
CMD ["python3", "-m", "http.server", "8000"]
`
  const name = `cli-${run}`

  test('a Dockerfile with each supported instruction builds and a sandbox from it works', async () => {
    const dir = context({ Dockerfile: dockerfile, 'src/data.txt': 'data-file\n', 'run.sh': 'echo "script says $1"\n' })
    const r = await cli(['template', 'build', '-n', `${name}:v1`, '--build-arg', 'GREETING=howdy',
      '--ready-cmd', '[ -n "$(ss -Htln sport = :8000)" ]', dir])
    assert.equal(r.code, 0, `CLI failed:\n${r.stdout}\n${r.stderr}`)
    assert.match(r.stdout, /\[builder \d+\/\d+\] COPY src\/ \.\/src\//, 'live log of the steps')
    assert.match(r.stderr, new RegExp(`template ${name}:v1 built`))
    assert.match(r.stderr, /ignoring line 8: LABEL/)

    const sbx = await create(`${name}:v1`)
    const out = (await sbx.commands.run(
      'whoami; pwd; cat greeting.txt src/data.txt; stat -c %U src/data.txt; run-me x; echo "M=$MODE"; ss -Htln sport = :8000 | wc -l')).stdout.split('\n')
    assert.deepEqual(out.slice(0, 9), ['user', '/opt/app', 'howdy world', 'data-file', 'user', 'script says x',
      'M=production mode', '1', ''])
    await kill(sbx)

    const list = await cli(['template', 'list'])
    assert.equal(list.code, 0, list.stderr)
    assert.match(list.stdout, new RegExp(`\\b${name}\\b`))

    // Rebuilding the same Dockerfile is all cached.
    const again = await cli(['template', 'build', '-n', `${name}:v1`, '--build-arg', 'GREETING=howdy',
      '--ready-cmd', '[ -n "$(ss -Htln sport = :8000)" ]', dir])
    assert.equal(again.code, 0, again.stderr)
    const steps = again.stdout.split('\n').filter((l) => /\[builder \d+\/\d+\]/.test(l))
    assert.ok(steps.length > 0 && steps.every((l) => l.includes('CACHED')), again.stdout)
    assert.match(again.stderr, /already uploaded/)

    const del = await cli(['template', 'delete', name])
    assert.equal(del.code, 0, del.stderr)
    assert.equal(await Template.exists(name), false)
  })

  for (const [what, df, message] of [
    ['an unsupported instruction', 'FROM debian:bookworm\nRUN true\nHEALTHCHECK CMD curl -f http://localhost/\n', /line 3: instruction HEALTHCHECK is not supported/],
    ['an unsupported image', 'FROM ubuntu:22.04\nRUN true\n', /line 1: FROM ubuntu:22.04: .*not supported.*supported images: e2bdev\/base/s],
    ['a multi-stage build', 'FROM debian:12 AS a\nFROM debian:12\n', /line 2: multi-stage/],
  ]) {
    test(`${what} fails before any work, with a clear message`, async () => {
      const n = `bad-cli-${uniq(3)}`
      const before = (await api('GET', '/templates')).body.length
      const r = await cli(['template', 'build', '-n', n, context({ Dockerfile: df })], { timeout: 60_000 })
      assert.notEqual(r.code, 0)
      assert.match(r.stderr, message)
      assert.equal((await api('GET', '/templates')).body.length, before)
      assert.equal((await api('GET', `/templates/aliases/${n}`)).status, 404, 'no template or build was requested')
    })
  }
})
