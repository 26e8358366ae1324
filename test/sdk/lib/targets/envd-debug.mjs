// Target: a bare `paddock envd` on localhost:49983, driven by the SDK in debug
// mode (E2B_DEBUG): no control plane, envdVersion 99.99.99, no access token.
// Processes run on this host as root (envd's default user) or as `user`.
import assert from 'node:assert/strict'
import * as e2b from 'e2b'
import { uniq } from '../util.mjs'

/** The address the SDK's debug mode always uses for envd. */
export const ENVD_URL = 'http://localhost:49983'

async function postInit(body, token) {
  const headers = { 'Content-Type': 'application/json' }
  if (token) headers['X-Access-Token'] = token
  return fetch(`${ENVD_URL}/init`, { method: 'POST', headers, body: JSON.stringify(body) })
}

/**
 * Build the target context the suites take. runId names the scratch
 * directories (run.sh removes them from the host afterwards).
 */
export function envdDebugTarget({ runId = process.env.PADDOCK_SDK_RUN_ID || `${process.pid}` } = {}) {
  const { Sandbox } = e2b
  let token = ''
  return {
    label: 'envd (SDK debug mode)',
    /** The SDK module the suites take error classes and enums from. */
    sdk: e2b,
    /** The user envd runs processes as when the SDK names none. */
    defaultUser: 'root',
    userHome: '/home/user',
    /** Writable by the default user; created on demand by the tests. */
    scratchRoot: `/tmp/paddock-sdk-${runId}`,
    /** Under the home of `user`, for tests acting as `user`. */
    userScratchRoot: `/home/user/.paddock-sdk-${runId}`,

    /** A sandbox without an access token (the SDK's debug sandbox). */
    async sandbox() {
      return Sandbox.create({ debug: true })
    },

    /** A sandbox object that sends no access token (used while one is set). */
    async unauthenticatedSandbox() {
      return Sandbox.create({ debug: true })
    },

    /** The tests may POST /init themselves (a bare envd has no proxy in front). */
    canInit: true,

    /**
     * A sandbox with an envd access token: the token is installed with
     * POST /init (as the control plane does), and the sandbox object carries it.
     * fetch(path, init, {token}) is a raw request to this sandbox's envd with
     * or without the token header.
     */
    async secure() {
      const next = `paddock-sdk-${uniq(16)}`
      const res = await postInit({ accessToken: next }, token)
      assert.equal(res.status, 204, `POST /init with a new access token: ${res.status} ${await res.text()}`)
      token = next
      const sandbox = new Sandbox({
        sandboxId: 'debug_sandbox_id',
        envdVersion: '0.6.4',
        envdAccessToken: token,
        debug: true,
      })
      return {
        sandbox,
        token,
        url: (path) => `${ENVD_URL}${path}`,
        fetch(path, init = {}, { withToken = false } = {}) {
          const headers = new Headers(init.headers)
          if (withToken) headers.set('X-Access-Token', token)
          return fetch(path.startsWith('http') ? path : `${ENVD_URL}${path}`, { ...init, headers })
        },
        postInit: (body, tok) => postInit(body, tok),
      }
    },

    /** Clear the access token again (an /init proving the current token, with none in the body). */
    async secureTeardown() {
      if (!token) return
      const res = await postInit({}, token)
      assert.equal(res.status, 204, `POST /init clearing the access token: ${res.status} ${await res.text()}`)
      token = ''
    },
  }
}
