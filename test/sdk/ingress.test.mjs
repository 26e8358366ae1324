// Ingress with nothing but E2B_DOMAIN: the official SDK (e2b 2.51.0) against
// `paddock serve --domain D --tls-listen <ip>:443 --dns <ip>:53`, run by
// ingress.sh inside a network namespace whose only resolver is Paddock's
// DNS, with E2B_DOMAIN, E2B_API_KEY and NODE_EXTRA_CA_CERTS set and no URL
// variables. The envd suites run through https://49983-<id>.D; then the
// ingress itself: DNS, TLS, sandbox ports through getHost(), WebSockets,
// long streams, 502s, traffic tokens, anti-spoofing, maskRequestHost,
// signed links (per-sandbox host, and a shared plain-HTTP E2B_SANDBOX_URL
// where they are routed by signature), and the CA and certificate files.
import assert from 'node:assert/strict'
import { promises as dnsp } from 'node:dns'
import { readFileSync, statSync, writeFileSync } from 'node:fs'
import tls from 'node:tls'
import { after, before, describe, test } from 'node:test'
import * as sdk from 'e2b'
import { domainTarget } from './lib/targets/domain.mjs'
import { registerCommandTests } from './lib/suites/commands.mjs'
import { registerPtyTests } from './lib/suites/pty.mjs'
import { registerFilesTests } from './lib/suites/files.mjs'
import { registerAccessTests } from './lib/suites/access.mjs'
import { describeError, uniq, waitFor } from './lib/util.mjs'

const { Sandbox } = sdk
const T = { timeout: 60_000 }

function env(name) {
  const v = process.env[name]
  if (!v) throw new Error(`${name} is not set: run through test/sdk/run.sh ingress`)
  return v
}

// Checked before anything else: the SDK gets the domain and nothing more.
for (const v of ['E2B_API_URL', 'E2B_SANDBOX_URL', 'E2B_DEBUG']) {
  if (process.env[v]) throw new Error(`${v} is set: the ingress suite runs with E2B_DOMAIN only`)
}
const domain = env('E2B_DOMAIN')
const [domainName, domainPort = '443'] = domain.split(':')
const serverAddr = env('PADDOCK_INGRESS_ADDR') // where DNS must send every name of the domain
const tlsDir = env('PADDOCK_INGRESS_TLS_DIR')
const plainUrl = env('PADDOCK_INGRESS_PLAIN_URL') // the plain-HTTP listener (E2B_SANDBOX_URL mode)
const keepFile = env('PADDOCK_INGRESS_KEEP_FILE') // a sandbox for the restart phase
env('NODE_EXTRA_CA_CERTS')

const probeSource = readFileSync(new URL('./lib/fixtures/probe.py', import.meta.url), 'utf8')

const ctx = domainTarget({ sdk })

// The envd suites, through https://49983-<id>.<domain>.
registerCommandTests(ctx)
registerPtyTests(ctx)
registerFilesTests(ctx)
registerAccessTests(ctx)

/** Start probe.py in sbx on port (bound to bind) named name; wait until it answers through host routing. */
async function startProbe(sbx, { port = 8080, bind = '127.0.0.1', name = sbx.sandboxId, headers = {} } = {}) {
  const path = `/tmp/probe-${uniq()}.py`
  await sbx.files.write(path, probeSource)
  await sbx.commands.run(`python3 ${path} ${port} ${bind} ${name}`, { background: true })
  const url = `https://${sbx.getHost(port)}/name`
  await waitFor(
    async () => {
      const res = await fetch(url, { headers })
      return res.status === 200 && (await res.text()) === name
    },
    { timeoutMs: 15_000, intervalMs: 100, what: `probe server on port ${port} of ${sbx.sandboxId}` },
  )
}

async function jsonOf(res) {
  const text = await res.text()
  try {
    return JSON.parse(text)
  } catch {
    throw new Error(`status ${res.status}: body is not JSON: ${text.slice(0, 300)}`)
  }
}

describe('ingress by E2B_DOMAIN', () => {
  after(() => ctx.cleanup())

  test("the namespace's resolver is Paddock's DNS: the domain resolves to the server, other names are refused", T, async () => {
    const conf = readFileSync('/etc/resolv.conf', 'utf8')
    const servers = [...conf.matchAll(/^\s*nameserver\s+(\S+)/gm)].map((m) => m[1])
    assert.deepEqual(servers, [serverAddr], `resolv.conf in the namespace: ${conf}`)
    for (const name of [domainName, `api.${domainName}`, `49983-i${uniq(10)}.${domainName}`, `8000-iabc.${domainName.toUpperCase()}`]) {
      const { address } = await dnsp.lookup(name, { family: 4 })
      assert.equal(address, serverAddr, name)
    }
    const r = new dnsp.Resolver({ timeout: 3000, tries: 1 })
    r.setServers([serverAddr])
    assert.deepEqual(await r.resolve4(`api.${domainName}`), [serverAddr])
    const err = await r.resolve4('example.com').then(
      () => null,
      (e) => e,
    )
    assert.equal(err?.code, 'EREFUSED', `example.com: ${describeError(err)}`)
  })

  test('TLS: the local CA verifies the wildcard certificate; ALPN offers HTTP/2 and HTTP/1.1', T, async () => {
    const handshake = (servername, alpn) =>
      new Promise((resolve, reject) => {
        const s = tls.connect({ host: servername, port: Number(domainPort), servername, ALPNProtocols: alpn }, () => {
          const out = { proto: s.alpnProtocol, cert: s.getPeerCertificate(), authorized: s.authorized }
          s.end()
          resolve(out)
        })
        s.on('error', reject)
      })
    const h2 = await handshake(`api.${domainName}`, ['h2', 'http/1.1'])
    assert.equal(h2.authorized, true)
    assert.equal(h2.proto, 'h2')
    for (const name of [`DNS:${domainName}`, `DNS:api.${domainName}`, `DNS:*.${domainName}`]) {
      assert.ok(h2.cert.subjectaltname.split(', ').includes(name), `SANs ${h2.cert.subjectaltname} lack ${name}`)
    }
    assert.match(h2.cert.issuer.CN, /^Paddock local CA/)
    const h1 = await handshake(`49983-i${uniq(10)}.${domainName}`, ['http/1.1'])
    assert.equal(h1.authorized, true)
    assert.equal(h1.proto, 'http/1.1')
    // The Platform API on https://api.<domain> and on the bare domain.
    for (const host of [`api.${domain}`, domain]) {
      const res = await fetch(`https://${host}/health`)
      assert.equal(res.status, 200, `${host}: ${await res.text()}`)
    }
  })

  test('the CA and certificate files have modes 0644 (certificates) and 0600 (keys)', T, () => {
    const want = { 'ca.crt': 0o644, 'ca.key': 0o600, 'server.crt': 0o644, 'server.key': 0o600 }
    for (const [name, mode] of Object.entries(want)) {
      const st = statSync(`${tlsDir}/${name}`)
      assert.equal(st.mode & 0o777, mode, `${name}: ${(st.mode & 0o777).toString(8)}`)
      assert.equal(st.uid, 0, `${name} owned by root`)
    }
    assert.equal(readFileSync(process.env.NODE_EXTRA_CA_CERTS, 'utf8'), readFileSync(`${tlsDir}/ca.crt`, 'utf8'))
  })

  test('a web server in the sandbox (python3 -m http.server 8000) through https://${getHost(8000)}', T, async () => {
    const sbx = await ctx.create()
    const dir = `/tmp/www-${uniq()}`
    await sbx.files.write(`${dir}/hello.txt`, `hello from ${sbx.sandboxId}`)
    await sbx.commands.run(`python3 -m http.server 8000 --directory ${dir}`, { background: true })
    assert.equal(sbx.getHost(8000), `8000-${sbx.sandboxId}.${domain}`)
    const url = `https://${sbx.getHost(8000)}/hello.txt`
    const res = await waitFor(
      async () => {
        const r = await fetch(url)
        return r.status === 200 ? r : null
      },
      { timeoutMs: 15_000, intervalMs: 100, what: url },
    )
    assert.equal(await res.text(), `hello from ${sbx.sandboxId}`)
  })

  test('a WebSocket to a sandbox port over wss:// (a server bound to the sandbox loopback)', T, async () => {
    assert.equal(typeof WebSocket, 'function', 'global WebSocket missing (Node 20 needs --experimental-websocket)')
    const sbx = await ctx.sandbox()
    await startProbe(sbx, { port: 8081 })
    const ws = new WebSocket(`wss://${sbx.getHost(8081)}/ws`)
    const got = []
    await new Promise((resolve, reject) => {
      ws.onerror = (e) => reject(new Error(`websocket error: ${e.message ?? e.type}`))
      ws.onopen = () => ws.send('one')
      ws.onmessage = (m) => {
        got.push(m.data)
        if (got.length === 1) ws.send('two')
        else resolve()
      }
    })
    ws.close()
    assert.deepEqual(got, [`echo:one from ${sbx.sandboxId}`, `echo:two from ${sbx.sandboxId}`])
  })

  test('a long stream stays open and flows through TLS (output arrives while the command runs)', T, async () => {
    const sbx = await ctx.sandbox()
    const gate = `/tmp/gate-${uniq()}`
    let first
    const firstSeen = new Promise((resolve) => (first = resolve))
    const handle = await sbx.commands.run(`echo first; while [ ! -e ${gate} ]; do sleep 0.05; done; echo second`, {
      background: true,
      onStdout: (d) => d.includes('first') && first(),
    })
    // The command only ends after the test saw its first line: a buffered
    // stream would never deliver it.
    await firstSeen
    await sbx.files.write(gate, '')
    const r = await handle.wait()
    assert.equal(r.stdout, 'first\nsecond\n')
  })

  test("a closed port and a killed sandbox give 502 with E2B's JSON body (HTML for browsers)", T, async () => {
    const sbx = await ctx.create()
    const closed = await fetch(`https://${sbx.getHost(8999)}/`)
    assert.equal(closed.status, 502)
    assert.match(closed.headers.get('content-type'), /application\/json/)
    assert.deepEqual(await jsonOf(closed), {
      code: 502,
      message: 'The sandbox is running but port is not open',
      port: 8999,
      sandboxId: sbx.sandboxId,
    })
    const page = await fetch(`https://${sbx.getHost(8999)}/`, { headers: { Accept: 'text/html,application/xhtml+xml' } })
    assert.equal(page.status, 502)
    assert.match(page.headers.get('content-type'), /text\/html/)
    assert.match(await page.text(), /port is not open/)

    await sbx.kill()
    for (const port of [8000, 49983]) {
      const gone = await fetch(`https://${sbx.getHost(port)}/health`)
      assert.equal(gone.status, 502, `port ${port}`)
      assert.deepEqual(await jsonOf(gone), { code: 502, message: 'The sandbox was not found', sandboxId: sbx.sandboxId })
    }
    assert.equal(await sbx.isRunning(), false)
  })

  test('traffic token: a private sandbox port refuses requests without it and serves them with it', T, async () => {
    const sbx = await ctx.create({ network: { allowPublicTraffic: false } })
    const token = sbx.trafficAccessToken
    assert.ok(typeof token === 'string' && token.length >= 16, `trafficAccessToken: ${token}`)
    await startProbe(sbx, { headers: { 'e2b-traffic-access-token': token } })
    const url = `https://${sbx.getHost(8080)}/name`
    const without = await fetch(url)
    assert.equal(without.status, 403, await without.text())
    const wrong = await fetch(url, { headers: { 'e2b-traffic-access-token': `${token}x` } })
    assert.equal(wrong.status, 403)
    const other = await ctx.sandbox() // another sandbox's token is no good either
    const foreign = await fetch(url, { headers: { 'e2b-traffic-access-token': other.trafficAccessToken ?? 'none' } })
    assert.equal(foreign.status, 403)
    const withToken = await fetch(url, { headers: { 'e2b-traffic-access-token': token } })
    assert.equal(withToken.status, 200)
    assert.equal(await withToken.text(), sbx.sandboxId)
    // envd has its own token: the SDK needs no traffic token on 49983.
    assert.equal((await sbx.commands.run('echo private-ok')).stdout, 'private-ok\n')
    // A public sandbox needs none.
    await startProbe(other)
    assert.equal(other.trafficAccessToken, undefined)
  })

  test('routing headers on a per-sandbox host are ignored: no spoofing into another sandbox', T, async () => {
    const [a, b] = await Promise.all([ctx.create(), ctx.create()])
    await Promise.all([startProbe(a, { port: 8082 }), startProbe(b, { port: 8082 })])
    const spoof = (id, port) => ({ 'E2b-Sandbox-Id': id, 'E2b-Sandbox-Port': String(port) })
    const res = await fetch(`https://${a.getHost(8082)}/name`, { headers: spoof(b.sandboxId, 8082) })
    assert.equal(await res.text(), a.sandboxId, 'the host decides, not the headers')
    // On envd's host, B's headers and B's access token reach A's envd, which refuses B's token.
    await b.files.write('/tmp/secret-b.txt', 'b only')
    const envd = await fetch(`https://${a.getHost(49983)}/files?path=${encodeURIComponent('/tmp/secret-b.txt')}`, {
      headers: { ...spoof(b.sandboxId, 49983), 'X-Access-Token': b.envdAccessToken },
    })
    assert.equal(envd.status, 401, await envd.text())
    // A real shared host with the same headers does route to B (the contrast).
    const viaShared = await fetch(`${plainUrl}/name`, { headers: spoof(b.sandboxId, 8082) })
    assert.equal(await viaShared.text(), b.sandboxId)
  })

  test('maskRequestHost rewrites the Host a sandbox port sees', T, async () => {
    const masked = await ctx.create({ network: { maskRequestHost: 'masked-${PORT}.example.test' } })
    const plain = await ctx.sandbox()
    await Promise.all([startProbe(masked, { port: 8083 }), startProbe(plain, { port: 8083 })])
    assert.equal(await (await fetch(`https://${masked.getHost(8083)}/host`)).text(), 'masked-8083.example.test')
    assert.equal(await (await fetch(`https://${plain.getHost(8083)}/host`)).text(), plain.getHost(8083))
  })

  test('signed links on the per-sandbox host work with plain fetch', T, async () => {
    const sbx = await ctx.sandbox()
    const p = `/tmp/signed-${uniq()}.txt`
    const up = await sbx.uploadUrl(p)
    assert.ok(up.startsWith(`https://49983-${sbx.sandboxId}.${domain}/files?`), up)
    const form = new FormData()
    form.append('file', new Blob(['through the domain']), 'x.txt')
    const res = await fetch(up, { method: 'POST', body: form })
    assert.equal(res.status, 200, await res.text())
    const down = await fetch(await sbx.downloadUrl(p))
    assert.equal(await down.text(), 'through the domain')
  })

  describe('signed links on a shared plain-HTTP E2B_SANDBOX_URL are routed by their signature', () => {
    let s1, s2
    const p = `/tmp/same-${uniq()}.txt`
    before(async () => {
      const opts = { apiUrl: plainUrl, sandboxUrl: plainUrl }
      ;[s1, s2] = await Promise.all([Sandbox.create(opts), Sandbox.create(opts)])
      ctx.track(s1)
      ctx.track(s2)
      await s1.files.write(p, `content of ${s1.sandboxId}`)
      await s2.files.write(p, `content of ${s2.sandboxId}`)
    })

    test('downloadUrl/uploadUrl name no sandbox, and reach the one that signed them', T, async () => {
      for (const s of [s1, s2]) {
        const url = await s.downloadUrl(p)
        assert.ok(url.startsWith(`${plainUrl}/files?`) && !url.includes(s.sandboxId), url)
        const res = await fetch(url)
        assert.equal(res.status, 200)
        assert.equal(await res.text(), `content of ${s.sandboxId}`)
      }
      const q = `/tmp/up-${uniq()}.txt`
      const form = new FormData()
      form.append('file', new Blob(['uploaded to s2']), 'up.txt')
      const up = await fetch(await s2.uploadUrl(q), { method: 'POST', body: form })
      assert.equal(up.status, 200, await up.text())
      assert.equal(await s2.files.read(q), 'uploaded to s2')
      assert.equal(await s1.files.exists(q), false)
    })

    test('a tampered or unsigned link is refused (401 JSON), and a killed sandbox no longer signs', T, async () => {
      const good = new URL(await s1.downloadUrl(p))
      const tampered = new URL(good)
      tampered.searchParams.set('path', '/etc/shadow')
      for (const url of [tampered, `${plainUrl}/files?path=${encodeURIComponent(p)}`]) {
        const res = await fetch(url)
        assert.equal(res.status, 401)
        const body = await jsonOf(res)
        assert.equal(body.code, 401)
        assert.match(body.message, /signature/)
      }
      const link = await s2.downloadUrl(p)
      await s2.kill()
      const res = await fetch(link)
      const body = await jsonOf(res)
      assert.equal(res.status, 401, JSON.stringify(body))
      assert.match(body.message, /matches no running sandbox/)
    })
  })

  test('a sandbox kept for the restart phase', T, async () => {
    const sbx = await Sandbox.create({ timeoutMs: 600_000, metadata: { purpose: 'ingress restart' } })
    if (process.env.PADDOCK_SDK_IDS_FILE) writeFileSync(process.env.PADDOCK_SDK_IDS_FILE, `${sbx.sandboxId}\n`, { flag: 'a' })
    const marker = `kept-${uniq()}`
    await sbx.files.write('/tmp/kept.txt', marker)
    writeFileSync(keepFile, JSON.stringify({ id: sbx.sandboxId, marker }))
  })
})
