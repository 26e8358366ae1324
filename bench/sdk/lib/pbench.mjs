// Runs the Go side of the benchmarks (bench/cmd/pbench) and parses its JSON.
import { execFile, spawn } from 'node:child_process'
import readline from 'node:readline'

export class PBench {
  constructor(bin, log) {
    this.bin = bin
    this.log = log
    this.env = { ...process.env }
  }

  /** Passes the API key in the environment (never on a command line or in the log). */
  setApiKey(key) {
    this.env.PADDOCK_API_KEY = key
  }

  /** Runs `pbench <args>` and returns its {samples, values, notes}. */
  run(args, { timeoutMs = 30 * 60_000 } = {}) {
    this.log(`pbench ${args.join(' ')}`)
    return new Promise((resolve, reject) => {
      execFile(this.bin, args, { maxBuffer: 256 << 20, timeout: timeoutMs, env: this.env }, (err, stdout, stderr) => {
        if (err) {
          reject(new Error(`pbench ${args[0]} failed: ${err.message}\n${stderr}`))
          return
        }
        try {
          resolve(JSON.parse(stdout))
        } catch (e) {
          reject(new Error(`pbench ${args[0]}: bad output: ${e.message}: ${stdout.slice(0, 200)}`))
        }
      })
    })
  }

  /** Starts `pbench fileserver`; resolves to {addr, stop()}. */
  fileServer(dir) {
    return this.server(['fileserver', '--dir', dir])
  }

  /**
   * Starts `pbench apistub` answering creates with the JSON in bodyFile;
   * resolves to {addr, stop()}.
   */
  apiStub(bodyFile) {
    return this.server(['apistub', '--body-file', bodyFile])
  }

  /** Starts a pbench server that prints {addr} and stops when stdin closes. */
  server(args) {
    this.log(`pbench ${args.join(' ')}`)
    return new Promise((resolve, reject) => {
      const p = spawn(this.bin, args, { stdio: ['pipe', 'pipe', 'inherit'] })
      const exited = new Promise((r) => p.once('exit', r))
      p.once('error', reject)
      const rl = readline.createInterface({ input: p.stdout })
      rl.once('line', (line) => {
        const { addr } = JSON.parse(line)
        resolve({
          addr,
          stop: async () => {
            p.stdin.end()
            await exited
          },
        })
      })
      p.once('exit', (code) => reject(new Error(`pbench ${args[0]} exited (${code}) before serving`)))
    })
  }
}
