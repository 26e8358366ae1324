// Package codeinterp owns the code-interpreter server that runs inside a
// sandbox on port 49999, next to envd. It speaks the wire contract of E2B's
// code interpreter (the server behind @e2b/code-interpreter and the Python
// e2b_code_interpreter package), so the official SDKs work unchanged, and it
// imports nothing of the control plane.
//
// # HTTP API
//
//	POST   /execute               {code, context_id?, language?, env_vars?} -> 200 NDJSON stream
//	POST   /contexts              {language?, cwd?} -> 200 {id, language, cwd}
//	GET    /contexts              -> 200 [{id, language, cwd}, ...]
//	POST   /contexts/{id}/restart -> 200 null (404 text when unknown)
//	DELETE /contexts/{id}         -> 200 null (404 text when unknown)
//	GET    /health                -> 200 "OK"
//	GET    /ready                 -> 200 "OK" once the default contexts are up, else 503 text
//
// /ready is Paddock's own (E2B's server has none): it answers 200 once the
// default contexts started by Server.Start (python for `paddock codeinterp`)
// have a running kernel, so a template's ready command polling it makes a
// sandbox's creation return with a warm interpreter; 503 with the reason
// while they start or after one failed.
//
// /execute answers 400 (plain text) when both context_id and language are
// given, 404 "Context X not found" for an unknown context_id, and otherwise
// streams one JSON object per line (never a blank line), flushed per line:
//
//	{"type":"number_of_executions","execution_count":N}
//	{"type":"stdout","text":"...","timestamp":"<ISO 8601>"}
//	{"type":"stderr","text":"...","timestamp":"<ISO 8601>"}
//	{"type":"result","is_main_result":bool, <fields below>}
//	{"type":"error","name":"...","value":"...","traceback":"..."}
//	{"type":"keepalive"}            after every 5 s without output
//	{"type":"end_of_execution"}     always the last line
//
// # Results: MIME type to field
//
// A Jupyter display_data message becomes a result with is_main_result false,
// an execute_result (the value of the cell's last expression) one with
// is_main_result true. Each MIME type of the bundle maps to one field:
//
//	text/plain              text        (one pair of outer ' or " quotes stripped, as E2B does)
//	text/html               html
//	text/markdown           markdown
//	image/svg+xml           svg
//	image/png               png         (base64)
//	image/jpeg              jpeg        (base64)
//	application/pdf         pdf         (base64)
//	text/latex              latex
//	application/json        json        (JSON value)
//	application/javascript  javascript
//	e2b/data                data        (JSON object)
//	e2b/chart               chart       (JSON object)
//	anything else           extra       (object keyed by MIME type)
//
// A matplotlib figure (plt.show(), or a figure left open at the end of a
// cell) arrives as a display_data with text/plain and image/png; a pandas
// DataFrame as an execute_result with text/plain and text/html.
//
// # Contexts and kernels
//
// A context is one stateful kernel with its own working directory. Languages:
//
//   - python: a real Jupyter kernel (python3 -m ipykernel_launcher) spoken to
//     over the Jupyter messaging protocol 5.3 on ZeroMQ (shell, control and
//     iopub sockets over ipc in a private directory, HMAC-SHA256 signed).
//     Matplotlib uses the inline backend (MPLBACKEND), tracebacks have no
//     colours (InteractiveShell.colors=NoColor), and the traceback lines are
//     joined with "\n".
//   - javascript and typescript (js and ts are aliases): a persistent Node.js
//     process running an embedded runner (runner.js). Code runs in the main
//     realm as a vm.Script, so top-level let/const/class/function survive
//     between executions; top-level await is rewritten the way Node's REPL
//     does it. console output is stdout/stderr, the completion value is the
//     main result (util.inspect). TypeScript is transpiled when the
//     typescript module is installed (Debian node-typescript) and otherwise
//     run as JavaScript.
//   - bash: a persistent interactive bash over pipes. stdout and stderr stay
//     apart; a non-zero exit status becomes an error with an empty name and
//     the status as value, as E2B's bash kernel reports it.
//
// Executions in one context are queued; different contexts run in parallel.
// When the client goes away mid-execution (the SDK aborts the request after
// its timeoutMs), the kernel is interrupted (SIGINT to its process group) and
// the context stays usable. A restart or a crash of the kernel during an
// execution ends it with an error named ContextRestarting.
//
// The global environment of the sandbox (envd's GET /envs, read with the
// X-Access-Token of the /execute request) is set once per kernel, before its
// first execution. A request's env_vars apply to that execution only: they
// are reset afterwards to the global value, or removed.
package codeinterp
