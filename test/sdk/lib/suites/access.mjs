// The envd access token and signed file URLs (sandbox.uploadUrl/downloadUrl).
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { describeError, rejection, sleep, uniq } from '../util.mjs'

// Per-test bound: a hung stream fails the test instead of the run.
const T = { timeout: 30_000 }

const statRequest = (path) => ({
  method: 'POST',
  headers: { 'Content-Type': 'application/json', 'Connect-Protocol-Version': '1' },
  body: JSON.stringify({ path }),
})

/** Replace one character of the signature in a signed URL. */
function tamper(urlString) {
  const u = new URL(urlString)
  const sig = u.searchParams.get('signature')
  assert.ok(sig?.startsWith('v1_'), `signed URL has a v1_ signature: ${urlString}`)
  const i = sig.length - 2
  u.searchParams.set('signature', sig.slice(0, i) + (sig[i] === 'A' ? 'B' : 'A') + sig.slice(i + 1))
  return u.toString()
}

/**
 * Register the access-token and signed-URL tests against ctx. ctx.secure()
 * returns a sandbox that has an access token (see lib/targets), and
 * ctx.secureTeardown() undoes whatever secure() changed.
 */
export function registerAccessTests(ctx) {
  const { AuthenticationError } = ctx.sdk
  describe('access token and signed URLs', () => {
    let sec // { sandbox, token, url(path), fetch(path, init, {withToken}), withoutToken?, postInit? }
    let sbx
    let dir
    before(async () => {
      sec = await ctx.secure()
      sbx = sec.sandbox
      dir = `${ctx.scratchRoot}/signed-${uniq()}`
    })
    after(async () => {
      await ctx.secureTeardown()
    })

    test('the SDK with the token can run commands and read and write files', T, async () => {
      const r = await sbx.commands.run('echo token-ok')
      assert.equal(r.stdout, 'token-ok\n')
      await sbx.files.write(`${dir}/sdk.txt`, 'via sdk')
      assert.equal(await sbx.files.read(`${dir}/sdk.txt`), 'via sdk')
      assert.equal(await sbx.files.exists(`${dir}/sdk.txt`), true)
    })

    test('an RPC without the token, or with a wrong one, gets 401', T, async () => {
      const none = await sec.fetch('/filesystem.Filesystem/Stat', statRequest('/'))
      assert.equal(none.status, 401, `no token: ${none.status} ${await none.text()}`)
      const wrong = statRequest('/')
      wrong.headers['X-Access-Token'] = `${sec.token}x`
      const bad = await sec.fetch('/filesystem.Filesystem/Stat', wrong)
      assert.equal(bad.status, 401, `wrong token: ${bad.status} ${await bad.text()}`)
      const good = await sec.fetch('/filesystem.Filesystem/Stat', statRequest('/'), { withToken: true })
      assert.equal(good.status, 200, `right token: ${good.status} ${await good.text()}`)
    })

    test('GET /files with neither token nor signature gets 401; /health stays open', T, async () => {
      await sbx.files.write(`${dir}/open.txt`, 'x')
      const res = await sec.fetch(`/files?path=${encodeURIComponent(`${dir}/open.txt`)}`)
      assert.equal(res.status, 401, `${res.status} ${await res.text()}`)
      const health = await sec.fetch('/health')
      assert.equal(health.status, 204)
    })

    if (ctx.unauthenticatedSandbox) {
      test('an SDK sandbox without the token gets AuthenticationError', T, async () => {
        const anon = await ctx.unauthenticatedSandbox()
        const e1 = await rejection(anon.files.read(`${dir}/sdk.txt`), 'files.read without token')
        assert.ok(e1 instanceof AuthenticationError, `files.read: want AuthenticationError, got ${describeError(e1)}`)
        const e2 = await rejection(anon.commands.run('true'), 'commands.run without token')
        assert.ok(e2 instanceof AuthenticationError, `commands.run: want AuthenticationError, got ${describeError(e2)}`)
      })
    }

    test('uploadUrl: a plain multipart POST stores the file', T, async () => {
      const p = `${dir}/uploaded.txt`
      const url = await sbx.uploadUrl(p)
      assert.match(url, /[?&]signature=v1_/)
      const form = new FormData()
      form.append('file', new Blob(['uploaded through a signed URL']), 'uploaded.txt')
      const res = await fetch(url, { method: 'POST', body: form })
      const body = await res.text()
      assert.equal(res.status, 200, body)
      const infos = JSON.parse(body)
      assert.ok(Array.isArray(infos) && infos.length === 1, body)
      assert.equal(infos[0].path, p)
      assert.equal(await sbx.files.exists(p), true)
      assert.equal(await sbx.files.read(p), 'uploaded through a signed URL')
    })

    test("uploadUrl for user 'user' writes a file owned by user", T, async () => {
      const p = `${ctx.userScratchRoot}/signed-${uniq()}.txt`
      const url = await sbx.uploadUrl(p, { user: 'user' })
      assert.match(url, /[?&]username=user\b/)
      const form = new FormData()
      form.append('file', new Blob(['owned']), 'x.txt')
      const res = await fetch(url, { method: 'POST', body: form })
      assert.equal(res.status, 200, await res.text())
      assert.equal((await sbx.files.getInfo(p)).owner, 'user')
    })

    test('downloadUrl: a plain GET returns the content', T, async () => {
      const p = `${dir}/download.txt`
      await sbx.files.write(p, 'download me ✓')
      const res = await fetch(await sbx.downloadUrl(p))
      const text = await res.text()
      assert.equal(res.status, 200, text)
      assert.equal(text, 'download me ✓')
    })

    test('a tampered signature, or one for another path, gets 401', T, async () => {
      const p = `${dir}/tamper.txt`
      await sbx.files.write(p, 'secret')
      const bad = await fetch(tamper(await sbx.downloadUrl(p)))
      assert.equal(bad.status, 401, `tampered download: ${bad.status} ${await bad.text()}`)

      const other = new URL(await sbx.downloadUrl(`${dir}/other.txt`))
      other.searchParams.set('path', p)
      const swapped = await fetch(other)
      assert.equal(swapped.status, 401, `signature for another path: ${swapped.status} ${await swapped.text()}`)

      const form = new FormData()
      form.append('file', new Blob(['evil']), 'tamper.txt')
      const up = await fetch(tamper(await sbx.uploadUrl(p)), { method: 'POST', body: form })
      assert.equal(up.status, 401, `tampered upload: ${up.status} ${await up.text()}`)
      assert.equal(await sbx.files.read(p), 'secret', 'a rejected upload left the file alone')

      // A read signature does not authorise a write.
      const readSig = new URL(await sbx.downloadUrl(p))
      const up2 = await fetch(readSig, { method: 'POST', body: form })
      assert.equal(up2.status, 401, `read signature used for upload: ${up2.status} ${await up2.text()}`)
    })

    test('an expired signature gets 401', T, async () => {
      const p = `${dir}/expiring.txt`
      await sbx.files.write(p, 'short-lived')

      const past = await fetch(await sbx.downloadUrl(p, { useSignatureExpiration: -10 }))
      assert.equal(past.status, 401, `expiration in the past: ${past.status} ${await past.text()}`)

      const url = new URL(await sbx.downloadUrl(p, { useSignatureExpiration: 2 }))
      const exp = Number(url.searchParams.get('signature_expiration'))
      assert.ok(exp > Date.now() / 1000, `signature_expiration ${exp} is in the future`)
      const fresh = await fetch(url)
      assert.equal(fresh.status, 200, `before expiry: ${fresh.status} ${await fresh.text()}`)
      while (Date.now() / 1000 <= exp + 1) await sleep(100)
      const stale = await fetch(url)
      assert.equal(stale.status, 401, `after expiry: ${stale.status} ${await stale.text()}`)
    })

    if (ctx.canInit) {
      test('/init without the current token cannot change it', T, async () => {
        const res = await sec.postInit({ accessToken: 'stolen' })
        assert.equal(res.status, 401, `${res.status} ${await res.text()}`)
        const stillOk = await sec.fetch('/filesystem.Filesystem/Stat', statRequest('/'), { withToken: true })
        assert.equal(stillOk.status, 200, 'the original token still works')
      })
    }
  })
}
