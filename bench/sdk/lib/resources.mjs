// Host-side facts about sandboxes: what a sandbox leaves on the host
// (cgroups, veth, mounts, directories, netns file) and what memory it uses.
import fs from 'node:fs'
import path from 'node:path'

const CGROUP_ROOT = '/sys/fs/cgroup'
const CGROUP_PARENT = 'paddock' // local.DefaultCgroupParent
const NETNS_DIR = '/run/paddock/netns' // network.DefaultNetnsDir

/** Hierarchies (v1 controllers and the v2 mount) under /sys/fs/cgroup. */
export function cgroupHierarchies() {
  return fs
    .readdirSync(CGROUP_ROOT, { withFileTypes: true })
    .filter((e) => e.isDirectory() && !e.name.includes(','))
    .map((e) => path.join(CGROUP_ROOT, e.name))
}

/** The host veth of a sandbox, from the network manager's record. */
export function hostVeth(dataDir, id) {
  try {
    return JSON.parse(fs.readFileSync(path.join(dataDir, 'network', `${id}.json`), 'utf8')).HostVeth || null
  } catch {
    return null
  }
}

/** Names what of sandbox `id` still exists on the host ([] when all gone). */
export function leftovers(dataDir, id, veth, hierarchies) {
  const left = []
  for (const h of hierarchies) {
    if (fs.existsSync(path.join(h, CGROUP_PARENT, id))) left.push(`cgroup ${h}`)
  }
  if (veth && fs.existsSync(`/sys/class/net/${veth}`)) left.push(`veth ${veth}`)
  if (fs.existsSync(path.join(NETNS_DIR, id))) left.push('netns file')
  const sbDir = path.join(dataDir, 'runtime', 'sandboxes', id)
  if (fs.existsSync(sbDir)) left.push('sandbox dir')
  if (fs.existsSync(path.join(dataDir, 'runtime', 'state', id))) left.push('container state')
  const mi = fs.readFileSync('/proc/self/mountinfo', 'utf8')
  if (mi.includes(`${sbDir}/`) || mi.includes(`${NETNS_DIR}/${id} `)) left.push('mount')
  return left
}

export function meminfo() {
  const out = {}
  for (const line of fs.readFileSync('/proc/meminfo', 'utf8').split('\n')) {
    const m = /^(\w+):\s+(\d+)/.exec(line)
    if (m) out[m[1]] = Number(m[2]) * 1024
  }
  return out
}

/** memory.usage_in_bytes, total_rss and PSS of the processes of a sandbox's cgroup. */
export function sandboxMemory(id) {
  const dir = path.join(CGROUP_ROOT, 'memory', CGROUP_PARENT, id)
  const r = { usage: 0, rss: 0, pss: 0, procs: 0 }
  try {
    r.usage = Number(fs.readFileSync(path.join(dir, 'memory.usage_in_bytes'), 'utf8'))
    const m = /^total_rss (\d+)$/m.exec(fs.readFileSync(path.join(dir, 'memory.stat'), 'utf8'))
    if (m) r.rss = Number(m[1])
    for (const pid of fs.readFileSync(path.join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean)) {
      r.procs++
      r.pss += processPss(pid)
    }
  } catch {}
  return r
}

export function processPss(pid) {
  try {
    const m = /^Pss:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'))
    return m ? Number(m[1]) * 1024 : 0
  } catch {
    return 0
  }
}

export function processRss(pid) {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m ? Number(m[1]) * 1024 : 0
  } catch {
    return 0
  }
}

/** CPU seconds (user+system) a process has used. */
export function processCpuSeconds(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(f[11]) + Number(f[12])) / 100 // utime, stime in clock ticks (USER_HZ = 100)
}
