// The envd and platform suites through `paddock serve` with e2b 2.50.0 (the
// npm alias e2b-2.50; v1 routes: POST /sandboxes, POST /sandboxes/{id}/connect).
// run.sh serve starts the server; by hand: export E2B_API_URL, E2B_SANDBOX_URL
// and E2B_API_KEY as `paddock serve` prints them, then node --test this file.
import * as sdk from 'e2b-2.50'
import { registerServeSuites } from './lib/serve-suites.mjs'

registerServeSuites({ sdk, pkg: 'e2b-2.50', version: '2.50.0', routes: 'v1' })
