// Fuzzing the admin API's free-form inputs — destination settings (POST
// /v1/sources/:id/destinations, PATCH /v1/destinations/:id) and audience conditions (POST
// /v1/sources/:id/audiences) — and then the workers with whatever it accepted: traffic for each
// created destination's maps and each audience's events and traits. Never a 5xx, every 4xx
// `{statusCode, error, message}`, what was created reads back, and its counts add up once settled.
import fc from 'fast-check'
import t from 'tap'
import { poisonText, stringText, valueText } from './arbitraries.js'
import { audienceBody, destinationBody, settingsText } from './admin-arbitraries.js'
import {
  checkAdminError, checkProperty, expect, finalChecks, ingestIdle, ingestionHeaders, neighbour, post, runs, startFuzzApp, tally
} from './harness.js'
import { DEFAULT_TOKEN } from '../fixtures/fake-graph.js'

const fuzz = await startFuzzApp(t)
const destinationSource = await fuzz.createSource('fuzzed destinations')
const audienceSource = await fuzz.createSource('fuzzed audiences')
const settings = { conversionEvents: { 'Order Completed': '1111' } }
const destinations = [
  await fuzz.createDestination(destinationSource.id, settings),
  await fuzz.createDestination(audienceSource.id, { ...settings, audienceEntryEvents: { vip: '2222', constructor: '2222' } })
]
const patchSource = await fuzz.createSource('patched')
const patchTarget = await fuzz.createDestination(patchSource.id, settings)
const NEIGHBOUR_PII = { email: 'fuzz-fzs000000000002@example.com', phone: '+1 555 0100 00000002' }
fuzz.loopDelay.enable()

/** The event names a destination's maps give (its own entries). */
function mappedEvents (destinationSettings: Record<string, unknown>): string[] {
  const names = new Set<string>()
  for (const setting of ['completeRegistrationEvents', 'leadEvents', 'conversionEvents', 'audienceEntryEvents']) {
    const map = destinationSettings[setting]
    if (typeof map === 'object' && map !== null) for (const name of Object.keys(map)) names.add(name)
  }
  return [...names]
}

/** Sends tracks of these events (and a good neighbour) to a source; resolves once its neighbour reached Meta. */
async function traffic (writeKey: string, events: string[], identifies: Array<Record<string, unknown>> = []): Promise<void> {
  const now = new Date().toISOString()
  const n = neighbour('admin', NEIGHBOUR_PII)
  const batch = [
    ...events.map((event, i) => ({ type: 'track', userId: `fz-user-${i % 3}`, event, messageId: `fzm-admin-${Math.random()}`, properties: { revenue: 5, currency: 'USD', value: 5, price: 5 }, timestamp: now, context: { traits: { email: NEIGHBOUR_PII.email } } })),
    ...identifies,
    JSON.parse(n.text)
  ]
  tally.messagesSent += batch.length
  const answer = await post(fuzz.url, '/v1/batch', Buffer.from(JSON.stringify({ batch })), ingestionHeaders(writeKey))
  expect(answer.status === 200, () => `traffic answered ${answer.status} ${answer.body.slice(0, 300)}`)
  const rejected = (JSON.parse(answer.body).rejected ?? []).length
  tally.accepted += batch.length - rejected
  tally.rejected += rejected
  const missing = await fuzz.undelivered([n.id])
  tally.neighboursDelivered += 1 - missing.length
  expect(missing.length === 0, () => `the good neighbour ${n.id} was not delivered`)
}

/**
 * Waits until the destination has nothing retrying but what it holds by design (an apiVersion
 * past Meta's expiry holds its conversions until it is changed), then checks that its counts add up.
 */
async function settled (destinationId: string): Promise<void> {
  let stats: any
  const deadline = Date.now() + 20_000
  const waiting = () => stats.retrying - stats.held
  for (;;) {
    const answer = await fuzz.admin('GET', `/v1/destinations/${destinationId}/stats`)
    expect(answer.statusCode === 200, () => `stats answered ${answer.statusCode} ${answer.body}`)
    stats = answer.json
    if (waiting() === 0 || Date.now() > deadline) break
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  expect(waiting() === 0, () => `still retrying after 20 s: ${JSON.stringify(stats)}`)
  if (stats.held > 0) {
    const { json } = await fuzz.admin('GET', `/v1/destinations/${destinationId}`)
    expect(json.status === 'version_expired', () => `conversions held by a destination that is ${json.status}: ${JSON.stringify(stats)}`)
  }
  expect(stats.filtered + stats.invalid.total + stats.delivered + stats.deadLettered + stats.retrying === stats.received,
    () => `counts do not add up: ${JSON.stringify(stats)}`)
}

t.test('destination settings: any body, then traffic through what was accepted', async (t) => {
  const path = fc.oneof({ weight: 10, arbitrary: fc.constant(destinationSource.id) }, { weight: 1, arbitrary: fc.string({ minLength: 1, maxLength: 20 }) })
  await checkProperty(t, 'destination settings', fc.asyncProperty(path, destinationBody, settingsText, async (sourceId, body, patch) => {
    const created = await fuzz.admin('POST', `/v1/sources/${encodeURIComponent(sourceId)}/destinations`, body)
    if (created.statusCode !== 201) {
      checkAdminError(created.statusCode, created.json, created.body)
      expect([400, 404, 413].includes(created.statusCode), () => `a destination answered ${created.statusCode}: ${created.body.slice(0, 300)}`)
      return
    }
    const id: string = created.json.id
    const read = await fuzz.admin('GET', `/v1/destinations/${id}`)
    expect(read.statusCode === 200, () => `GET answered ${read.statusCode} ${read.body.slice(0, 300)}`)
    expect(JSON.stringify(read.json.settings) === JSON.stringify(created.json.settings), () => `settings read back differ: ${read.body.slice(0, 300)} vs ${created.body.slice(0, 300)}`)
    const patched = await fuzz.admin('PATCH', `/v1/destinations/${id}`, `{"settings":${patch}}`)
    if (patched.statusCode !== 200) checkAdminError(patched.statusCode, patched.json, patched.body)
    const current = (await fuzz.admin('GET', `/v1/destinations/${id}`)).json
    const token = await fuzz.admin('PUT', `/v1/destinations/${id}/access-token`, { accessToken: DEFAULT_TOKEN })
    expect(token.statusCode === 204, () => `the token answered ${token.statusCode}`)
    await traffic(destinationSource.writeKey, mappedEvents(current.settings).slice(0, 20))
    await ingestIdle(fuzz)
    await settled(id)
    const removed = await fuzz.admin('DELETE', `/v1/destinations/${id}`)
    expect(removed.statusCode === 204, () => `DELETE answered ${removed.statusCode}`)
  }), { numRuns: runs(150, 0.6), seed: 1406 })
})

t.test('PATCH a destination with any body', async (t) => {
  const body = fc.oneof(
    { weight: 6, arbitrary: settingsText.map((settings) => `{"settings":${settings}}`) },
    { weight: 1, arbitrary: fc.tuple(fc.oneof(stringText, valueText), fc.oneof(fc.constantFrom('true', 'false'), valueText)).map(([name, enabled]) => `{"name":${name},"enabled":${enabled}}`) },
    { weight: 1, arbitrary: valueText },
    { weight: 1, arbitrary: poisonText }
  )
  await checkProperty(t, 'destination patch', fc.asyncProperty(body, async (text) => {
    const patched = await fuzz.admin('PATCH', `/v1/destinations/${patchTarget.id}`, text)
    if (patched.statusCode !== 200) {
      checkAdminError(patched.statusCode, patched.json, patched.body)
      expect([400, 413].includes(patched.statusCode), () => `PATCH answered ${patched.statusCode}: ${patched.body.slice(0, 300)}`)
    }
    const read = await fuzz.admin('GET', `/v1/destinations/${patchTarget.id}`)
    expect(read.statusCode === 200, () => `GET after PATCH answered ${read.statusCode} ${read.body.slice(0, 300)}`)
    // Put back what the next case starts from (the name and enabled included).
    const reset = await fuzz.admin('PATCH', `/v1/destinations/${patchTarget.id}`, { name: 'patched', enabled: true, settings: Object.fromEntries(Object.keys(read.json.settings).map((key) => [key, null])) })
    expect(reset.statusCode === 200, () => `the reset answered ${reset.statusCode} ${reset.body.slice(0, 300)}`)
  }), { numRuns: runs(200, 0.8), seed: 1407 })
  const patched = await fuzz.admin('PATCH', `/v1/destinations/${patchTarget.id}`, { settings })
  t.equal(patched.statusCode, 200)
  await traffic(patchSource.writeKey, ['Order Completed'])
})

/** The event names and traits a condition reads. */
function conditionNames (condition: any, names = { events: new Set<string>(), traits: new Set<string>() }) {
  if (condition?.type === 'event') names.events.add(condition.event)
  if (condition?.type === 'trait') names.traits.add(condition.trait)
  if (Array.isArray(condition?.conditions)) for (const child of condition.conditions) conditionNames(child, names)
  return names
}

t.test('audience conditions: any body, then traffic for what was accepted', async (t) => {
  const traitValue = fc.oneof(fc.constantFrom('pro', 10, 11, '11', true, null, 1e308, -0, 'x'.repeat(1000)), fc.jsonValue({ maxDepth: 2 }))
  await checkProperty(t, 'audience condition', fc.asyncProperty(audienceBody([destinations[1].id]), fc.array(traitValue, { minLength: 1, maxLength: 3 }), async (body, values) => {
    const created = await fuzz.admin('POST', `/v1/sources/${audienceSource.id}/audiences`, body)
    if (created.statusCode !== 201) {
      checkAdminError(created.statusCode, created.json, created.body)
      expect([400, 409, 413].includes(created.statusCode), () => `an audience answered ${created.statusCode}: ${created.body.slice(0, 300)}`)
      return
    }
    const id: string = created.json.id
    for (const path of [`/v1/audiences/${id}`, `/v1/audiences/${id}/members?limit=10`, `/v1/sources/${audienceSource.id}/audiences`]) {
      const read = await fuzz.admin('GET', path)
      expect(read.statusCode === 200, () => `GET ${path} answered ${read.statusCode} ${read.body.slice(0, 300)}`)
    }
    const { events, traits } = conditionNames(created.json.condition)
    const identifies = values.flatMap((value, i) => ({ type: 'identify', userId: `fz-user-${i}`, messageId: `fzm-aud-${Math.random()}`, traits: Object.fromEntries([...traits].map((trait) => [trait, value])) }))
    await traffic(audienceSource.writeKey, [...events].slice(0, 10), identifies)
    await ingestIdle(fuzz)
    const read = await fuzz.admin('GET', `/v1/audiences/${id}`)
    expect(read.statusCode === 200, () => `GET after traffic answered ${read.statusCode} ${read.body.slice(0, 300)}`)
    const removed = await fuzz.admin('DELETE', `/v1/audiences/${id}`)
    expect(removed.statusCode === 204, () => `DELETE answered ${removed.statusCode} ${removed.body}`)
  }), { numRuns: runs(120, 0.5), seed: 1408 })
})

t.test('the invariants over every run of this file', async (t) => {
  await finalChecks(t, fuzz, {
    sources: [destinationSource, audienceSource, patchSource].map(({ id }) => ({ id })),
    destinations: [...destinations, patchTarget].map((d) => d.id)
  })
})
