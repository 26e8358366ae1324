// Target: real sandboxes of `paddock serve --domain D`, reached the way an
// SDK configured with nothing but E2B_DOMAIN reaches them: the API at
// https://api.D and every sandbox port at https://<port>-<id>.D, names
// resolved by Paddock's DNS responder, the certificate from Paddock's local
// CA (NODE_EXTRA_CA_CERTS). ingress.sh runs the tests in a network namespace
// set up that way. The same ctx shape as serve.mjs, minus routing headers.
import assert from 'node:assert/strict'
import { appendFileSync } from 'node:fs'

/** The port envd listens on inside every sandbox. */
export const ENVD_PORT = 49983

function requireEnv(name) {
  const v = process.env[name]
  if (!v) throw new Error(`${name} is not set: run these tests through test/sdk/run.sh ingress`)
  return v
}

/** Build the ctx the suites take, for the SDK module sdk (`e2b`). */
export function domainTarget({ sdk, runId = process.env.PADDOCK_SDK_RUN_ID || `${process.pid}` }) {
  const { Sandbox } = sdk
  const domain = requireEnv('E2B_DOMAIN')
  const apiKey = requireEnv('E2B_API_KEY')
  const idsFile = process.env.PADDOCK_SDK_IDS_FILE
  const created = new Map() // id -> Sandbox
  let shared // Promise<Sandbox>

  function track(sbx) {
    const id = typeof sbx === 'string' ? sbx : sbx.sandboxId
    created.set(id, sbx)
    if (idsFile) appendFileSync(idsFile, `${id}\n`)
    return sbx
  }

  /** https://<port>-<id>.<domain> (the domain may carry :port). */
  const hostUrl = (id, port = ENVD_PORT) => `https://${port}-${id}.${domain}`

  const ctx = {
    label: `paddock serve, E2B_DOMAIN=${domain}`,
    sdk,
    domain,
    apiKey,
    apiUrl: `https://api.${domain}`,
    hostUrl,
    defaultUser: 'user',
    userHome: '/home/user',
    scratchRoot: `/tmp/paddock-sdk-${runId}`,
    userScratchRoot: `/home/user/.paddock-sdk-${runId}`,
    /** /init is the control plane's: the proxy does not let the tests reach it. */
    canInit: false,

    async create(opts = {}) {
      return track(await Sandbox.create(opts))
    },
    track,
    createdIds: () => [...created.keys()],

    sandbox() {
      shared ??= ctx.create({ timeoutMs: 1_800_000, metadata: { purpose: 'ingress envd suites' } })
      return shared
    },

    async unauthenticatedSandbox() {
      const sbx = await ctx.sandbox()
      const info = await sbx.getInfo()
      return new Sandbox({ sandboxId: sbx.sandboxId, envdVersion: info.envdVersion })
    },

    /**
     * The shared sandbox with its envd access token. fetch(path, init,
     * {withToken}) is a raw request to its envd host (no routing headers:
     * the host routes). Signed links already point at that host.
     */
    async secure() {
      const sandbox = await ctx.sandbox()
      const token = sandbox.envdAccessToken
      assert.ok(typeof token === 'string' && token.length >= 16, `create returned an envdAccessToken: ${token}`)
      const base = hostUrl(sandbox.sandboxId)
      return {
        sandbox,
        token,
        url: (path) => `${base}${path}`,
        fetch(path, init = {}, { withToken = false } = {}) {
          const headers = new Headers(init.headers)
          if (withToken) headers.set('X-Access-Token', token)
          return fetch(path.startsWith('http') ? path : `${base}${path}`, { ...init, headers })
        },
      }
    },
    async secureTeardown() {},

    /** A raw Platform API request on https://api.<domain>. */
    async api(method, path, { key = apiKey, body } = {}) {
      const headers = new Headers()
      if (key !== null) headers.set('X-API-KEY', key)
      if (body !== undefined) headers.set('Content-Type', 'application/json')
      const res = await fetch(`https://api.${domain}${path}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      })
      const text = await res.text()
      let json
      try {
        json = JSON.parse(text)
      } catch {
        json = undefined
      }
      return { status: res.status, headers: res.headers, text, json }
    },

    /** Kill every sandbox this ctx created (already gone ones are fine). */
    async cleanup() {
      const errors = []
      for (const id of created.keys()) {
        try {
          await Sandbox.kill(id)
        } catch (err) {
          errors.push(`kill ${id}: ${err.message}`)
        }
      }
      created.clear()
      shared = undefined
      if (errors.length) throw new Error(errors.join('; '))
    },
  }
  return ctx
}
