// The body of serve-2.51.test.mjs and serve-2.50.test.mjs: the envd suites
// and the platform suite against real sandboxes of `paddock serve`, through
// one SDK version. run.sh starts the server and sets E2B_API_URL,
// E2B_SANDBOX_URL and E2B_API_KEY.
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { after, before } from 'node:test'
import { serveTarget } from './targets/serve.mjs'
import { registerCommandTests } from './suites/commands.mjs'
import { registerBackgroundTests } from './suites/background.mjs'
import { registerPtyTests } from './suites/pty.mjs'
import { registerFilesTests } from './suites/files.mjs'
import { registerAccessTests } from './suites/access.mjs'
import { registerPlatformTests } from './suites/platform.mjs'

/**
 * Register every suite for the SDK module sdk, installed as the npm package
 * pkg (its version must be version). routes: 'v1' (POST /sandboxes, SDK ≤
 * 2.50) or 'v2'.
 */
export function registerServeSuites({ sdk, pkg, version, routes }) {
  const installed = JSON.parse(readFileSync(new URL(`../node_modules/${pkg}/package.json`, import.meta.url), 'utf8')).version
  const ctx = serveTarget({ sdk, version, routes })
  before(() => {
    assert.equal(installed, version, `node_modules/${pkg} is ${installed}, want ${version} (npm ci)`)
  })

  registerCommandTests(ctx)
  registerBackgroundTests(ctx)
  registerPtyTests(ctx)
  registerFilesTests(ctx)
  registerAccessTests(ctx)
  registerPlatformTests(ctx)

  // Kill what the suites created (run.sh also kills whatever is left and
  // checks the host afterwards).
  after(() => ctx.cleanup())
  return ctx
}
