// Target: real sandboxes created through `paddock serve` with the official
// SDK (no debug mode), configured like a user would: E2B_API_URL,
// E2B_SANDBOX_URL and E2B_API_KEY (run.sh starts the server and sets them).
// The same ctx as envd-debug.mjs, plus what the platform suite needs.
//
// Every sandbox created through ctx.create() is remembered: cleanup() kills
// them, and their IDs are appended to $PADDOCK_SDK_IDS_FILE so run.sh can
// check the host for anything they left behind.
import assert from 'node:assert/strict'
import { appendFileSync } from 'node:fs'

/** The port envd listens on inside every sandbox. */
export const ENVD_PORT = 49983

function requireEnv(name) {
  const v = process.env[name]
  if (!v) {
    throw new Error(`${name} is not set: the serve suites need a running \`paddock serve\` (test/sdk/run.sh serve starts one)`)
  }
  return v
}

/**
 * Build the target context. sdk is the SDK module (`e2b` or the `e2b-2.50`
 * alias), version its package version; routes is 'v1' for SDKs that create
 * and connect through POST /sandboxes (≤ 2.50) and 'v2' otherwise.
 */
export function serveTarget({ sdk, version, routes, runId = process.env.PADDOCK_SDK_RUN_ID || `${process.pid}` }) {
  assert.ok(routes === 'v1' || routes === 'v2', `routes ${routes}`)
  const { Sandbox } = sdk
  const apiUrl = requireEnv('E2B_API_URL').replace(/\/$/, '')
  const sandboxUrl = requireEnv('E2B_SANDBOX_URL').replace(/\/$/, '')
  const apiKey = requireEnv('E2B_API_KEY')
  if (process.env.E2B_DEBUG && process.env.E2B_DEBUG !== 'false') {
    throw new Error('E2B_DEBUG is set: the serve suites need real sandboxes (unset it)')
  }
  const idsFile = process.env.PADDOCK_SDK_IDS_FILE
  const created = new Map() // id -> Sandbox
  let shared // Promise<Sandbox>

  /** Remember a sandbox (object or ID) for cleanup() and the host check. */
  function track(sbx) {
    const id = typeof sbx === 'string' ? sbx : sbx.sandboxId
    created.set(id, sbx)
    if (idsFile) appendFileSync(idsFile, `${id}\n`)
    return sbx
  }

  /** Routing headers of the shared-host proxy for a sandbox port. */
  const routing = (id, port = ENVD_PORT) => ({ 'E2b-Sandbox-Id': id, 'E2b-Sandbox-Port': String(port) })

  const ctx = {
    label: `paddock serve, e2b ${version} (${routes} routes)`,
    sdk,
    version,
    routes,
    apiUrl,
    sandboxUrl,
    apiKey,
    /** A sandbox runs commands as `user` unless told otherwise, as in E2B templates. */
    defaultUser: 'user',
    userHome: '/home/user',
    /** Sandboxes are fresh: any writable path does; these mirror the debug target. */
    scratchRoot: `/tmp/paddock-sdk-${runId}`,
    userScratchRoot: `/home/user/.paddock-sdk-${runId}`,
    /** /init is the control plane's: the proxy does not let the tests reach it. */
    canInit: false,

    /** Sandbox.create (template optional, as in the SDK), tracked for cleanup. */
    async create(templateOrOpts, opts) {
      const sbx =
        typeof templateOrOpts === 'string'
          ? await Sandbox.create(templateOrOpts, opts)
          : await Sandbox.create(templateOrOpts)
      return track(sbx)
    },
    track,
    /** IDs of every sandbox created through this ctx. */
    createdIds: () => [...created.keys()],

    /**
     * The sandbox the envd suites share (they do not care which sandbox they
     * get; one create saves time). Long timeout: it lives for the whole file.
     */
    sandbox() {
      shared ??= ctx.create({ timeoutMs: 1_800_000, metadata: { purpose: 'envd suites' } })
      return shared
    },

    /** A Sandbox object for the shared sandbox that sends no access token. */
    async unauthenticatedSandbox() {
      const sbx = await ctx.sandbox()
      const info = await sbx.getInfo()
      return new Sandbox({ sandboxId: sbx.sandboxId, envdVersion: info.envdVersion })
    },

    /**
     * Every sandbox of the control plane is secured: the token is the
     * envdAccessToken create returned (the SDK keeps it on the object).
     * fetch(path, init, {withToken}) is a raw request to the sandbox's envd
     * through the proxy. Signed links (uploadUrl/downloadUrl) carry no
     * sandbox ID with E2B_SANDBOX_URL: the suites fetch them as they are, and
     * the proxy routes them by their signature.
     */
    async secure() {
      const sandbox = await ctx.sandbox()
      const token = sandbox.envdAccessToken
      assert.ok(typeof token === 'string' && token.length >= 16, `create returned an envdAccessToken: ${token}`)
      const withRouting = (init, extra = {}) => {
        const headers = new Headers(init.headers)
        for (const [k, v] of Object.entries({ ...routing(sandbox.sandboxId), ...extra })) headers.set(k, v)
        return { ...init, headers }
      }
      return {
        sandbox,
        token,
        url: (path) => `${sandboxUrl}${path}`,
        fetch(path, init = {}, { withToken = false } = {}) {
          const url = path.startsWith('http') ? path : `${sandboxUrl}${path}`
          return fetch(url, withRouting(init, withToken ? { 'X-Access-Token': token } : {}))
        },
      }
    },
    async secureTeardown() {},

    /**
     * A raw Platform API request: key defaults to the suite's key, null sends
     * none. Returns { status, headers, text, json }.
     */
    async api(method, path, { key = apiKey, body, headers = {} } = {}) {
      const h = new Headers(headers)
      if (key !== null) h.set('X-API-KEY', key)
      let payload = body
      if (body !== undefined && typeof body !== 'string') {
        payload = JSON.stringify(body)
        h.set('Content-Type', 'application/json')
      }
      const res = await fetch(`${apiUrl}${path}`, { method, headers: h, body: payload })
      const text = await res.text()
      let json
      try {
        json = JSON.parse(text)
      } catch {
        json = undefined
      }
      return { status: res.status, headers: res.headers, text, json }
    },
    /** A raw request to a sandbox port through the proxy (routing headers). */
    proxyFetch(id, path, init = {}, port = ENVD_PORT) {
      const headers = new Headers(init.headers)
      for (const [k, v] of Object.entries(routing(id, port))) headers.set(k, v)
      return fetch(`${sandboxUrl}${path}`, { ...init, headers })
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
