// Fuzzing the ingest worker's stages (prepare, profiles, history and audiences, routing,
// transform, delivery) with real Redis: bodies are stored as the API stores them
// (`app.ingestBuffer.submit`, as test/jobs/isolation.test.ts does) but without the API's checks,
// so the worker meets what the API would refuse — prototype keys, deep nesting, huge messages,
// bodies that are not JSON, not objects, or not UTF-8. Whatever it meets, no ingest job fails for
// it, the good neighbours stored with it reach Meta, and each message that cannot be processed is
// set aside alone and counted (unprocessable ≤ accepted).
import fc from 'fast-check'
import t from 'tap'
import { generatedBatch, maybe, messageText, objectText, poisonText, valueText, type Json } from './arbitraries.js'
import { checkProperty, countPii, expect, finalChecks, ingestIdle, neighbour, runs, startFuzzApp, tally } from './harness.js'

const fuzz = await startFuzzApp(t)
const { app } = fuzz
const source = await fuzz.createSource('stored past the API')
const settings = {
  conversionEvents: { 'Order Completed': '1111', 'Product Viewed': '1111', constructor: '1111', toString: '1111', hasOwnProperty: '1111' },
  leadEvents: { 'Lead Generated': '1111' },
  completeRegistrationEvents: { 'Signed Up': '1111' },
  audienceEntryEvents: { fuzz_buyers: '2222', fuzz_pro: '2222', constructor: '2222' }
}
const destinations = [
  await fuzz.createDestination(source.id, settings),
  await fuzz.createDestination(source.id, { ...settings, apiFormat: 'offline-conversions', limitedDataUse: true, sendAudienceProperties: false })
]
// Audiences, so that every message's history, traits and memberships are evaluated too.
for (const audience of [
  { name: 'Fuzz Buyers', condition: { type: 'event', event: 'Order Completed', atLeast: 1, withinDays: 30, where: { currency: 'USD' } } },
  { name: 'Fuzz Pro', condition: { type: 'any', conditions: [{ type: 'trait', trait: 'plan', op: 'equals', value: 'pro' }, { type: 'trait', trait: 'age', op: 'gt', value: 10 }] } },
  { name: 'constructor', condition: { type: 'all', conditions: [{ type: 'trait', trait: 'constructor', op: 'exists' }, { type: 'event', event: 'constructor', withinDays: 7 }] } },
  { name: 'Fuzz Tiers', key: 'tiers', condition: { type: 'trait', trait: 'tier', op: 'gte', value: 2 } }
]) {
  const created = await fuzz.admin('POST', `/v1/sources/${source.id}/audiences`, audience)
  if (created.statusCode !== 201) throw new Error(`could not create an audience: ${created.body}`)
}
const NEIGHBOUR_PII = { email: 'fuzz-fzs000000000001@example.com', phone: '+1 555 0100 00000001' }
let declaredAccepted = 0
fuzz.loopDelay.enable()

/**
 * A stored body: a batch of adversarial messages with good neighbours (maybe spelt oddly, cut
 * short, not UTF-8), a top-level value that is not a batch, or one message on a single path.
 */
const stored = fc.oneof(
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('batch' as const), batch: generatedBatch, proto: maybe(fc.tuple(fc.constantFrom('"__proto__"', '"\\u005f_proto__"', '"constructor"'), valueText), 0.15) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('single' as const), text: fc.oneof({ weight: 4, arbitrary: messageText }, { weight: 1, arbitrary: valueText }, { weight: 1, arbitrary: poisonText }), pathType: fc.constantFrom('track', 'identify', 'page', 'screen', 'group', 'alias') }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('other' as const), text: fc.oneof(valueText, poisonText, fc.constantFrom('null', '[]', '"batch"', '42', '{"batch":null}', '{"batch":{}}', '{"batch":"x"}', '{"batch":[null,1,"x",[]]}', '{"batch":[{}],"context":null,"integrations":[]}', '{"batch":[],"sentAt":{}}', '')) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('cut' as const), batch: generatedBatch, at: fc.nat(), bytes: fc.constantFrom([0xff], [0xc3], [0xed, 0xa0, 0x80], []) }) }
)

t.test('bodies stored past the API: no job fails, neighbours reach Meta, the rest is set aside alone', async (t) => {
  await checkProperty(t, 'stored body', fc.asyncProperty(stored, fc.boolean(), async (body, idPrefix) => {
    const neighbours: Array<{ id: string, text: string }> = []
    let text: Json
    let pathType: string | undefined
    let count = 1
    if (body.kind === 'batch' || body.kind === 'cut') {
      const items = [...body.batch.messages]
      for (const at of body.batch.neighbourAt) {
        const n = neighbour('stored', NEIGHBOUR_PII)
        neighbours.push(n)
        items.splice(Math.round(at * items.length), 0, n.text)
      }
      const envelope = body.kind === 'batch' && body.proto !== null ? [...body.batch.envelope, body.proto] : body.batch.envelope
      text = objectText([...envelope, ['"batch"', `[${items.join(',')}]`]])
      count = Math.max(1, items.length)
    } else {
      text = body.text
      if (body.kind === 'single') pathType = body.pathType
    }
    let bytes = Buffer.from(text)
    if (body.kind === 'cut') {
      // Cut short, or with bytes that are not UTF-8 inside: its neighbours may be lost with it.
      const at = body.at % (text.length + 1)
      bytes = Buffer.concat([Buffer.from(text.slice(0, at)), Buffer.from(body.bytes), body.bytes.length === 0 ? Buffer.alloc(0) : Buffer.from(text.slice(at))])
    }
    // The neighbours the worker can read out of it: the body parses, its batch is an array, and
    // the neighbour's own text is intact (bytes put inside one spoil that message alone).
    const decoded = bytes.toString('utf8')
    let readable = false
    try { readable = Array.isArray(JSON.parse(decoded).batch) } catch {}
    const intact = readable ? neighbours.filter((n) => decoded.includes(n.text)) : []
    tally.messagesSent += count
    tally.stored += count
    tally.piiSent += countPii(text)
    declaredAccepted += count
    await app.ingestBuffer.submit({
      request: { sourceId: source.id, receivedAt: Date.now(), ...(pathType === undefined ? {} : { pathType: pathType as 'track' }), ...(idPrefix ? { idPrefix: `fz-${count}` } : {}) },
      body: bytes,
      valid: count,
      ids: [],
      indexes: [],
      rejected: 0
    })
    if (intact.length > 0) {
      const missing = await fuzz.undelivered(intact.map((n) => n.id))
      tally.neighboursDelivered += intact.length - missing.length
      expect(missing.length === 0, () => `good neighbours not delivered: ${missing.join(', ')}`)
    }
    await ingestIdle(fuzz)
    const health = await app.inject({ url: '/health' })
    expect(health.statusCode === 200, () => `/health answered ${health.statusCode}`)
  }), { numRuns: runs(200), seed: 1405 })
})

t.test('the invariants over every run of this file', async (t) => {
  t.comment(`fuzz: declared accepted ${declaredAccepted}`)
  await finalChecks(t, fuzz, {
    sources: [{ id: source.id, expected: { acceptedOrDuplicate: declaredAccepted, rejected: 0 } }],
    destinations: destinations.map((d) => d.id)
  })
})
