// The envd suite: the official SDK (debug mode) against a bare `paddock envd`
// on localhost:49983. run.sh starts the daemon; to run by hand:
//   bin/paddock envd --listen 127.0.0.1:49983 &  node --test test/sdk/envd.test.mjs
import { after } from 'node:test'
import { Sandbox } from 'e2b'
import { envdDebugTarget } from './lib/targets/envd-debug.mjs'
import { registerCommandTests } from './lib/suites/commands.mjs'
import { registerBackgroundTests } from './lib/suites/background.mjs'
import { registerPtyTests } from './lib/suites/pty.mjs'
import { registerFilesTests } from './lib/suites/files.mjs'
import { registerAccessTests } from './lib/suites/access.mjs'

const ctx = envdDebugTarget()

registerCommandTests(ctx)
registerBackgroundTests(ctx)
registerPtyTests(ctx)
registerFilesTests(ctx)
// Last: it installs an access token for its duration.
registerAccessTests(ctx)

// Best effort: remove the scratch directories through envd (run.sh also
// removes them from the host, which is the same filesystem in debug mode).
after(async () => {
  const sbx = await Sandbox.create({ debug: true })
  await sbx.files.remove(ctx.scratchRoot).catch(() => {})
  await sbx.files.remove(ctx.userScratchRoot).catch(() => {})
})
