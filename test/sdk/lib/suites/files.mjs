// files.*: read/write (text, large binary, several at once), list, exists,
// makeDir, rename, remove, getInfo, errors, watchDir and ownership.
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { before, describe, test } from 'node:test'
import { describeError, goPermissions, rejection, sha256, uniq, waitFor } from '../util.mjs'

// Per-test bound: a hung stream fails the test instead of the run.
const T = { timeout: 30_000 }

/** Register the filesystem tests against ctx (see lib/targets). */
export function registerFilesTests(ctx) {
  const { FileNotFoundError, FilesystemEventType, FileType, NotFoundError } = ctx.sdk
  describe('files', () => {
    let sbx
    const fresh = (label) => `${ctx.scratchRoot}/files-${label}-${uniq()}`

    before(async () => {
      sbx = await ctx.sandbox()
    })

    test('write then read text', T, async () => {
      const p = `${fresh('text')}/hello.txt`
      const content = 'hello wörld ✓\nsecond line\n'
      const info = await sbx.files.write(p, content)
      assert.equal(info.path, p)
      assert.equal(info.name, 'hello.txt')
      assert.equal(info.type, FileType.FILE)
      assert.equal(await sbx.files.read(p), content)
      // Overwrite truncates.
      await sbx.files.write(p, 'short')
      assert.equal(await sbx.files.read(p), 'short')
    })

    test('an empty file reads back as empty', T, async () => {
      const p = `${fresh('empty')}/empty`
      await sbx.files.write(p, '')
      assert.equal(await sbx.files.read(p), '')
      assert.equal((await sbx.files.read(p, { format: 'bytes' })).length, 0)
    })

    test('16 MiB of random bytes round-trip (format bytes)', T, async () => {
      const p = `${fresh('binary')}/blob.bin`
      const data = randomBytes(16 * 1024 * 1024)
      const ab = data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength)
      await sbx.files.write(p, ab)
      const back = await sbx.files.read(p, { format: 'bytes' })
      assert.ok(back instanceof Uint8Array, `read returned ${back?.constructor?.name}`)
      assert.equal(back.length, data.length)
      assert.equal(sha256(back), sha256(data))
      assert.equal((await sbx.files.getInfo(p)).size, data.length)
    })

    test('octet-stream, gzip and stream uploads and gzip and stream reads (envd >= 0.5.7)', T, async () => {
      const d = fresh('octet')
      const text = 'x'.repeat(100_000) + ' octet ✓\n'
      const a = await sbx.files.write(`${d}/octet.txt`, text, { useOctetStream: true })
      assert.equal(a.path, `${d}/octet.txt`)
      assert.equal(await sbx.files.read(`${d}/octet.txt`), text)

      await sbx.files.write(`${d}/gz.txt`, text, { gzip: true })
      assert.equal(await sbx.files.read(`${d}/gz.txt`), text, 'gzip upload, plain read')
      assert.equal(await sbx.files.read(`${d}/gz.txt`, { gzip: true }), text, 'gzip read')

      const bytes = new TextEncoder().encode(text)
      const stream = new ReadableStream({
        start(c) {
          for (let i = 0; i < bytes.length; i += 8192) c.enqueue(bytes.slice(i, i + 8192))
          c.close()
        },
      })
      await sbx.files.write(`${d}/streamed.txt`, stream)
      const rs = await sbx.files.read(`${d}/streamed.txt`, { format: 'stream' })
      const chunks = []
      for await (const c of rs) chunks.push(c)
      assert.equal(new TextDecoder().decode(Buffer.concat(chunks)), text)
    })

    test('metadata set on write is returned by write, getInfo and list (envd >= 0.6.2)', T, async () => {
      const d = fresh('meta')
      const p = `${d}/m.txt`
      const w = await sbx.files.write(p, 'm', { metadata: { owner: 'team-a', purpose: 'sdk test' } })
      assert.deepEqual(w.metadata, { owner: 'team-a', purpose: 'sdk test' })
      assert.deepEqual((await sbx.files.getInfo(p)).metadata, { owner: 'team-a', purpose: 'sdk test' })
      const listed = (await sbx.files.list(d)).find((e) => e.name === 'm.txt')
      assert.deepEqual(listed?.metadata, { owner: 'team-a', purpose: 'sdk test' })
      // A later write replaces the metadata set.
      await sbx.files.write(p, 'm2', { metadata: { purpose: 'changed' } })
      assert.deepEqual((await sbx.files.getInfo(p)).metadata, { purpose: 'changed' })
      await sbx.files.write(p, 'm3')
      assert.equal((await sbx.files.getInfo(p)).metadata, undefined, 'a write without metadata clears it')
    })

    test('write([...]) writes several files, creating parent directories', T, async () => {
      const d = fresh('multi')
      const entries = [
        { path: `${d}/a.txt`, data: 'A' },
        { path: `${d}/nested/deeper/b.txt`, data: 'BB' },
        { path: `${d}/c.bin`, data: new Uint8Array([0, 1, 2, 255]).buffer },
      ]
      const infos = await sbx.files.write(entries)
      assert.ok(Array.isArray(infos), 'write([...]) returns an array')
      assert.deepEqual(infos.map((i) => i.path).sort(), entries.map((e) => e.path).sort())
      assert.equal(await sbx.files.read(`${d}/a.txt`), 'A')
      assert.equal(await sbx.files.read(`${d}/nested/deeper/b.txt`), 'BB')
      assert.deepEqual([...(await sbx.files.read(`${d}/c.bin`, { format: 'bytes' }))], [0, 1, 2, 255])
    })

    test('list with depth 1 (default) and depth 2', T, async () => {
      const d = fresh('list')
      await sbx.files.write([
        { path: `${d}/f1.txt`, data: '1' },
        { path: `${d}/sub/f2.txt`, data: '22' },
        { path: `${d}/sub/deeper/f3.txt`, data: '333' },
      ])
      const shallow = await sbx.files.list(d)
      assert.deepEqual(
        shallow.map((e) => [e.path, e.name, e.type]).sort(),
        [
          [`${d}/f1.txt`, 'f1.txt', FileType.FILE],
          [`${d}/sub`, 'sub', FileType.DIR],
        ],
      )
      const deep = await sbx.files.list(d, { depth: 2 })
      assert.deepEqual(
        deep.map((e) => [e.path, e.name, e.type]).sort(),
        [
          [`${d}/f1.txt`, 'f1.txt', FileType.FILE],
          [`${d}/sub`, 'sub', FileType.DIR],
          [`${d}/sub/deeper`, 'deeper', FileType.DIR],
          [`${d}/sub/f2.txt`, 'f2.txt', FileType.FILE],
        ],
      )
      const f2 = deep.find((e) => e.name === 'f2.txt')
      assert.equal(f2.size, 2)
    })

    test('list of a missing directory rejects with FileNotFoundError', T, async () => {
      const err = await rejection(sbx.files.list(`${fresh('nolist')}/missing`), 'list(missing)')
      assert.ok(err instanceof FileNotFoundError, `want FileNotFoundError, got ${describeError(err)}`)
    })

    test('exists is true for a file and a directory, false for a missing path', T, async () => {
      const d = fresh('exists')
      await sbx.files.write(`${d}/x`, 'x')
      assert.equal(await sbx.files.exists(`${d}/x`), true)
      assert.equal(await sbx.files.exists(d), true)
      assert.equal(await sbx.files.exists(`${d}/missing`), false)
    })

    test('makeDir returns true, then false when it already exists; creates parents', T, async () => {
      const d = `${fresh('mkdir')}/a/b/c`
      assert.equal(await sbx.files.makeDir(d), true)
      assert.equal((await sbx.files.getInfo(d)).type, FileType.DIR)
      assert.equal(await sbx.files.makeDir(d), false)
    })

    test('rename moves a file and returns its new entry', T, async () => {
      const d = fresh('rename')
      await sbx.files.write(`${d}/old.txt`, 'moved content')
      const e = await sbx.files.rename(`${d}/old.txt`, `${d}/new.txt`)
      assert.equal(e.path, `${d}/new.txt`)
      assert.equal(e.name, 'new.txt')
      assert.equal(e.type, FileType.FILE)
      assert.equal(await sbx.files.exists(`${d}/old.txt`), false)
      assert.equal(await sbx.files.read(`${d}/new.txt`), 'moved content')
    })

    test('rename of a missing source rejects with FileNotFoundError', T, async () => {
      const d = fresh('rename-missing')
      await sbx.files.makeDir(d)
      const err = await rejection(sbx.files.rename(`${d}/nope`, `${d}/other`), 'rename(missing)')
      assert.ok(err instanceof FileNotFoundError, `want FileNotFoundError, got ${describeError(err)}`)
    })

    test('remove deletes files and directories recursively', T, async () => {
      const d = fresh('remove')
      await sbx.files.write([
        { path: `${d}/file`, data: 'f' },
        { path: `${d}/tree/a/b`, data: 'b' },
      ])
      await sbx.files.remove(`${d}/file`)
      assert.equal(await sbx.files.exists(`${d}/file`), false)
      await sbx.files.remove(`${d}/tree`)
      assert.equal(await sbx.files.exists(`${d}/tree`), false)
      assert.equal(await sbx.files.exists(d), true)
    })

    test('getInfo of a file and a directory', T, async () => {
      const d = fresh('info')
      const p = `${d}/info.txt`
      await sbx.files.write(p, '12345')
      const f = await sbx.files.getInfo(p)
      assert.equal(f.name, 'info.txt')
      assert.equal(f.path, p)
      assert.equal(f.type, FileType.FILE)
      assert.equal(f.size, 5)
      assert.equal(f.owner, ctx.defaultUser)
      assert.equal(typeof f.group, 'string')
      assert.ok(f.group.length > 0, 'group is set')
      assert.equal(f.mode & ~0o7777, 0, `mode holds permission bits only: ${f.mode.toString(8)}`)
      assert.equal(f.permissions, goPermissions('-', f.mode & 0o777))
      assert.ok(f.modifiedTime instanceof Date, 'modifiedTime is set')
      assert.ok(Math.abs(f.modifiedTime.getTime() - Date.now()) < 10 * 60_000, `modifiedTime ${f.modifiedTime}`)

      const di = await sbx.files.getInfo(d)
      assert.equal(di.type, FileType.DIR)
      assert.equal(di.name, d.split('/').pop())
      assert.equal(di.permissions, goPermissions('d', di.mode & 0o777))
    })

    test('reading a missing file rejects with FileNotFoundError', T, async () => {
      const p = `${fresh('missing')}/nope.txt`
      const err = await rejection(sbx.files.read(p), 'read(missing)')
      assert.ok(err instanceof FileNotFoundError, `want FileNotFoundError, got ${describeError(err)}`)
      assert.ok(err instanceof NotFoundError)
      const err2 = await rejection(sbx.files.getInfo(p), 'getInfo(missing)')
      assert.ok(err2 instanceof FileNotFoundError, `getInfo: want FileNotFoundError, got ${describeError(err2)}`)
    })

    test('watchDir (recursive) reports a file written after it started', T, async () => {
      const d = fresh('watch')
      await sbx.files.makeDir(`${d}/sub`)
      const events = []
      const w = await sbx.files.watchDir(d, (e) => events.push(e), { recursive: true })
      try {
        await sbx.files.write(`${d}/sub/new.txt`, 'watched')
        await sbx.files.write(`${d}/top.txt`, 'top')
        const show = () => JSON.stringify(events.map((e) => [e.name, e.type]))
        await waitFor(
          () =>
            events.some(
              (e) =>
                e.name === 'sub/new.txt' &&
                (e.type === FilesystemEventType.CREATE || e.type === FilesystemEventType.WRITE),
            ),
          { what: 'a create/write event named sub/new.txt', describe: show },
        )
        await waitFor(() => events.some((e) => e.name === 'top.txt'), {
          what: 'an event named top.txt',
          describe: show,
        })
      } finally {
        await w.stop()
      }
    })

    test('watchDir with includeEntry carries the entry (envd >= 0.6.3)', T, async () => {
      const d = fresh('watch-entry')
      await sbx.files.makeDir(d)
      const events = []
      const w = await sbx.files.watchDir(d, (e) => events.push(e), { includeEntry: true })
      try {
        await sbx.files.write(`${d}/e.txt`, 'entry!')
        const ev = await waitFor(() => events.find((e) => e.name === 'e.txt' && e.entry), {
          what: 'an event for e.txt with an entry',
          describe: () => JSON.stringify(events),
        })
        assert.equal(ev.entry.path, `${d}/e.txt`)
        assert.equal(ev.entry.name, 'e.txt')
        assert.equal(ev.entry.type, FileType.FILE)
      } finally {
        await w.stop()
      }
    })

    test('watchDir of a missing directory rejects with FileNotFoundError', T, async () => {
      const err = await rejection(
        sbx.files.watchDir(`${fresh('nowatch')}/missing`, () => {}),
        'watchDir(missing)',
      )
      assert.ok(err instanceof FileNotFoundError, `want FileNotFoundError, got ${describeError(err)}`)
    })

    test("files written as user 'user' are owned by user", T, async () => {
      const d = `${ctx.userScratchRoot}/owned-${uniq()}`
      const info = await sbx.files.write(`${d}/mine.txt`, 'mine', { user: 'user' })
      assert.equal(info.path, `${d}/mine.txt`)
      const f = await sbx.files.getInfo(`${d}/mine.txt`, { user: 'user' })
      assert.equal(f.owner, 'user')
      assert.equal(f.group, 'user')
      const parent = await sbx.files.getInfo(d)
      assert.equal(parent.owner, 'user', 'the parent directory the write created belongs to user')
      assert.equal(await sbx.files.read(`${d}/mine.txt`, { user: 'user' }), 'mine')
    })

    test("relative paths resolve against the acting user's home", T, async () => {
      const rel = `${ctx.userScratchRoot.slice(ctx.userHome.length + 1)}/rel-${uniq()}.txt`
      const info = await sbx.files.write(rel, 'relative', { user: 'user' })
      assert.equal(info.path, `${ctx.userHome}/${rel}`)
      assert.equal(await sbx.files.read(`${ctx.userHome}/${rel}`), 'relative')
      assert.equal((await sbx.files.getInfo(rel, { user: 'user' })).path, `${ctx.userHome}/${rel}`)
    })

    test("makeDir as user 'user' creates a directory owned by user", T, async () => {
      const d = `${ctx.userScratchRoot}/mk-${uniq()}/inner`
      assert.equal(await sbx.files.makeDir(d, { user: 'user' }), true)
      assert.equal((await sbx.files.getInfo(d)).owner, 'user')
    })
  })
}
