// A node:test reporter that counts leaf tests (not describe blocks) and
// prints one line, "<label>: N passed, M failed", plus the failed names.
// Label from PADDOCK_SDK_SUITE (default "sdk suite").
export default async function* summary(source) {
  let passed = 0
  let failed = 0
  let skipped = 0
  const failures = []
  for await (const event of source) {
    if (event.type !== 'test:pass' && event.type !== 'test:fail') continue
    const { data } = event
    if (data.details?.type === 'suite') continue
    if (event.type === 'test:pass') {
      if (data.skip || data.todo) skipped++
      else passed++
    } else {
      failed++
      failures.push(data.name)
    }
  }
  const label = process.env.PADDOCK_SDK_SUITE || 'sdk suite'
  let line = `${label}: ${passed} passed, ${failed} failed`
  if (skipped) line += `, ${skipped} skipped`
  yield `${line}\n`
  for (const name of failures) yield `  failed: ${name}\n`
}
