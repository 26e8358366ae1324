import { Sandbox } from 'e2b'
const s = await Sandbox.create({ debug: true })
const t0 = Date.now()
try {
  const r = await s.commands.run(process.argv[2], { timeoutMs: Number(process.argv[3] || 60000), onStdout: d => console.log('out', Date.now()-t0, JSON.stringify(d)) })
  console.log('ok', Date.now()-t0, r)
} catch (e) { console.log('err', Date.now()-t0, e.constructor.name, e.message) }
