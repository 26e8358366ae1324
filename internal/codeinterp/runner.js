// Paddock code-interpreter JavaScript runner (embedded in the paddock
// binary, see internal/codeinterp/node.go). Requests arrive as JSON lines on
// fd 3: {"id":N,"code":"...","ts":bool,"silent":bool}. Each is answered on
// fd 4 with {"id":N,"value"?:"<util.inspect>","error"?:{name,value,traceback}}
// once the end marker of run N has been written to stdout and to stderr,
// which are the code's own streams.
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const readline = require('node:readline');
const util = require('node:util');
const vm = require('node:vm');
const { createRequire } = require('node:module');

const token = process.env.PADDOCK_CODEINTERP_TOKEN || '';
delete process.env.PADDOCK_CODEINTERP_TOKEN;

// The REPL's own rewrite of top-level await into an async function whose
// declarations stay global (available with --expose-internals).
let processTopLevelAwait = null;
try {
  ({ processTopLevelAwait } = require('internal/repl/await'));
} catch {
  processTopLevelAwait = null;
}

// What code sees as module-level names, resolved from the start directory.
const cellFile = path.join(process.cwd(), '[cell]');
globalThis.require = createRequire(cellFile);
globalThis.module = { exports: {}, filename: cellFile, id: '[cell]' };
globalThis.exports = globalThis.module.exports;
globalThis.__filename = cellFile;
globalThis.__dirname = process.cwd();

// Every script first calls the start hook, which tells the server that
// SIGINT now reaches the code: it runs under vm's breakOnSigint watch.
let currentId = 0;
Object.defineProperty(globalThis, '__paddock_start__', {
  value: () => {
    process.stderr.write(`\x02${token}:${currentId}:start\x03`);
  },
  enumerable: false,
});

const interruptedMessage = 'Script execution was interrupted by `SIGINT`';
let interruptCurrent = null;
// Without a listener SIGINT would kill the runner; between executions it is a no-op.
process.on('SIGINT', () => {
  if (interruptCurrent) interruptCurrent();
});
// Errors of callbacks and promises nobody waits for are reported, not fatal (like the REPL).
process.on('uncaughtException', (err) => {
  process.stderr.write(`Uncaught ${util.inspect(err)}\n`);
});
process.on('unhandledRejection', (reason) => {
  process.stderr.write(`Uncaught (in promise) ${util.inspect(reason)}\n`);
});

let typescript;
function loadTypeScript() {
  if (typescript !== undefined) return typescript;
  typescript = null;
  for (const name of ['typescript', '/usr/share/nodejs/typescript', '/usr/lib/nodejs/typescript', '/usr/lib/node_modules/typescript']) {
    try {
      typescript = require(name);
      break;
    } catch {
      // try the next place
    }
  }
  return typescript;
}

// transpile strips TypeScript types; without the typescript module the code
// runs as JavaScript.
function transpile(code) {
  const ts = loadTypeScript();
  if (!ts) return code;
  return ts.transpileModule(code, {
    reportDiagnostics: false,
    compilerOptions: {
      target: ts.ScriptTarget.ES2022,
      module: ts.ModuleKind.CommonJS,
      esModuleInterop: true,
    },
  }).outputText;
}

function interruptible(promise) {
  return new Promise((resolve, reject) => {
    interruptCurrent = () => reject(new Error(interruptedMessage));
    Promise.resolve(promise).then(resolve, reject);
  }).finally(() => {
    interruptCurrent = null;
  });
}

async function evaluate(code) {
  let source = code;
  let wrapped = false;
  if (processTopLevelAwait && code.includes('await')) {
    try {
      const rewritten = processTopLevelAwait(code + '\n');
      if (rewritten !== null) {
        source = rewritten;
        wrapped = true;
      }
    } catch {
      // Not valid as a whole: compiling it as it is reports the error.
    }
  }
  const script = new vm.Script(`__paddock_start__();\n${source}`, { filename: 'cell', lineOffset: -1 });
  let value = script.runInThisContext({ breakOnSigint: true, displayErrors: false });
  // The synchronous part is over: from now on the server interrupts with a
  // request on fd 3, not with SIGINT.
  process.stderr.write(`\x02${token}:${currentId}:async\x03`);
  if (wrapped) {
    const settled = await interruptible(value);
    value = settled === undefined ? undefined : settled.value;
  }
  return value;
}

// The stack up to the runner's own frames.
function traceback(stack) {
  const lines = String(stack).split('\n');
  const cut = lines.findIndex((l) => /^\s+at /.test(l) && (l.includes(__filename) || l.includes('node:vm') || l.includes('node:internal/')));
  return (cut < 0 ? lines : lines.slice(0, cut)).join('\n');
}

function describe(err) {
  if (err instanceof Error || (err !== null && typeof err === 'object' && 'stack' in err)) {
    return {
      name: String(err.name || 'Error'),
      value: String(err.message ?? ''),
      traceback: traceback(err.stack || ''),
    };
  }
  return { name: 'Error', value: typeof err === 'string' ? err : util.inspect(err), traceback: '' };
}

function finish(id, res) {
  const marker = `\x02${token}:${id}:end\x03`;
  process.stdout.write(marker);
  process.stderr.write(marker);
  fs.writeSync(4, JSON.stringify(res) + '\n');
}

async function handle(req) {
  const res = { id: req.id };
  currentId = req.id;
  try {
    let code = String(req.code ?? '');
    if (req.ts) code = transpile(code);
    const value = await evaluate(code);
    if (value !== undefined && !req.silent) res.value = util.inspect(value);
  } catch (err) {
    res.error = describe(err);
  }
  finish(req.id, res);
}

const queue = [];
let busy = false;
async function drain() {
  if (busy) return;
  busy = true;
  while (queue.length > 0) await handle(queue.shift());
  busy = false;
}

const requests = readline.createInterface({ input: fs.createReadStream(null, { fd: 3 }), crlfDelay: Infinity });
requests.on('line', (line) => {
  let req;
  try {
    req = JSON.parse(line);
  } catch {
    return;
  }
  // {"interrupt":N} stops request N while it awaits (SIGINT stops its
  // synchronous part); it is ignored once N is over.
  if (req.interrupt !== undefined) {
    if (req.interrupt === currentId && interruptCurrent) interruptCurrent();
    return;
  }
  queue.push(req);
  drain();
});
requests.on('close', () => process.exit(0));

finish(0, { id: 0 });
