// The envd and platform suites through `paddock serve` with e2b 2.51.0
// (v2 routes: POST /v2/sandboxes, POST /v2/sandboxes/{id}/connect).
// run.sh serve starts the server; by hand: export E2B_API_URL, E2B_SANDBOX_URL
// and E2B_API_KEY as `paddock serve` prints them, then node --test this file.
import * as sdk from 'e2b'
import { registerServeSuites } from './lib/serve-suites.mjs'

registerServeSuites({ sdk, pkg: 'e2b', version: '2.51.0', routes: 'v2' })
