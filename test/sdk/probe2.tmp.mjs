import { Sandbox } from 'e2b'
const s = await Sandbox.create({ debug: true })
for (const user of ['user', 'root', undefined]) {
  const t0 = Date.now()
  try { const r = await s.commands.run('echo hi; whoami', { user, timeoutMs: 3000 }); console.log(user, 'ok', Date.now()-t0, JSON.stringify(r)) }
  catch (e) { console.log(user, 'err', Date.now()-t0, e.constructor.name, e.message.slice(0,80)) }
}
