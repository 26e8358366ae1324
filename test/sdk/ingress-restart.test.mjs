// The second phase of the ingress suite, after ingress.sh restarted `paddock
// serve` on the same data dir: the CA and the server certificate are the
// ones from before (NODE_EXTRA_CA_CERTS is a copy taken before the restart,
// so TLS itself proves the CA did not change), their modes held, and a
// sandbox from before the restart is still reachable through its host.
import assert from 'node:assert/strict'
import { readFileSync, statSync } from 'node:fs'
import { test } from 'node:test'
import { Sandbox } from 'e2b'

const T = { timeout: 60_000 }

function env(name) {
  const v = process.env[name]
  if (!v) throw new Error(`${name} is not set: run through test/sdk/run.sh ingress`)
  return v
}
for (const v of ['E2B_API_URL', 'E2B_SANDBOX_URL', 'E2B_DEBUG']) {
  if (process.env[v]) throw new Error(`${v} is set: the ingress suite runs with E2B_DOMAIN only`)
}
const domain = env('E2B_DOMAIN')
const tlsDir = env('PADDOCK_INGRESS_TLS_DIR')
const savedDir = env('PADDOCK_INGRESS_SAVED_DIR') // copies taken before the restart
const kept = JSON.parse(readFileSync(env('PADDOCK_INGRESS_KEEP_FILE'), 'utf8'))

test('the CA and the server certificate survived the restart, with their modes', T, () => {
  for (const name of ['ca.crt', 'server.crt']) {
    assert.equal(readFileSync(`${tlsDir}/${name}`, 'utf8'), readFileSync(`${savedDir}/${name}`, 'utf8'), `${name} changed`)
  }
  assert.equal(env('NODE_EXTRA_CA_CERTS'), `${savedDir}/ca.crt`)
  const want = { 'ca.crt': 0o644, 'ca.key': 0o600, 'server.crt': 0o644, 'server.key': 0o600 }
  for (const [name, mode] of Object.entries(want)) {
    assert.equal(statSync(`${tlsDir}/${name}`).mode & 0o777, mode, name)
  }
})

test('a sandbox from before the restart is reachable through https://49983-<id>.<domain>', T, async () => {
  const sbx = await Sandbox.connect(kept.id)
  assert.equal(await sbx.files.read('/tmp/kept.txt'), kept.marker)
  assert.equal((await sbx.commands.run('echo after-restart')).stdout, 'after-restart\n')
  const res = await fetch(await sbx.downloadUrl('/tmp/kept.txt'))
  assert.equal(await res.text(), kept.marker)
  await sbx.kill()
  const gone = await fetch(`https://${sbx.getHost(49983)}/health`)
  assert.equal(gone.status, 502)
})

test('a new sandbox works after the restart', T, async () => {
  const sbx = await Sandbox.create()
  try {
    assert.equal(sbx.getHost(8000), `8000-${sbx.sandboxId}.${domain}`)
    assert.equal((await sbx.commands.run('echo fresh')).stdout, 'fresh\n')
  } finally {
    await sbx.kill()
  }
})
