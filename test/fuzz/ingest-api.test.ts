// Fuzzing the ingestion API over real HTTP, with the workers running in the same process (ROLE
// all): any body on any ingestion path, batches of adversarial messages with good neighbours
// around them, single messages, and bodies at the 32 KB and 4 MB limits. Each case asserts the
// answer (never a 5xx; a 4xx is `{success: false, error}`), that the app still answers /health,
// and that the good neighbours reach Meta; the file ends with the invariants over all of them
// (harness.ts finalChecks). Seeds are fixed; a failure prints its seed, path and counterexample.
import { gzipSync, deflateSync } from 'node:zlib'
import fc from 'fast-check'
import t from 'tap'
import { generatedBatch, messageText, objectText, poisonText, valueText, type GeneratedBatch, type Json } from './arbitraries.js'
import {
  checkIngestionAnswer, checkProperty, countPii, expect, finalChecks, ingestIdle, ingestionHeaders, neighbour, post, runs, startFuzzApp, tally
} from './harness.js'

// Three ingest partitions: batches whose messages span them are stored as parts (cut from the
// body's text), the path that hostile batches must not break.
const fuzz = await startFuzzApp(t, { INGEST_PARTITIONS: '3' })
const { config } = fuzz
const anyBodySource = await fuzz.createSource('any body')
const batchSource = await fuzz.createSource('batches')
const singleSource = await fuzz.createSource('single messages')
const settings = { conversionEvents: { 'Order Completed': '1111', 'Product Viewed': '1111', constructor: '1111' }, leadEvents: { 'Lead Generated': '1111' }, completeRegistrationEvents: { 'Signed Up': '1111' } }
const destinations = [
  await fuzz.createDestination(anyBodySource.id, settings),
  await fuzz.createDestination(batchSource.id, settings),
  await fuzz.createDestination(singleSource.id, { ...settings, apiFormat: 'offline-conversions' })
]
// Exact counts the API answered, per source whose rejections the test can tell apart.
const expected = new Map([batchSource.id, singleSource.id].map((id) => [id, { acceptedOrDuplicate: 0, rejected: 0 }]))
const NEIGHBOUR_PII = { email: 'fuzz-fzs000000000000@example.com', phone: '+1 555 0100 00000000' }
fuzz.loopDelay.enable()

const PATHS = ['/v1/track', '/v1/identify', '/v1/page', '/v1/screen', '/v1/group', '/v1/alias', '/v1/t', '/v1/i', '/v1/p', '/v1/s', '/v1/g', '/v1/a', '/v1/batch', '/v1/b', '/v1/import', '/v1/import/', '/v1/batch/']
const SINGLE_PATHS = PATHS.slice(0, 12)

async function healthy (): Promise<void> {
  const health = await fuzz.app.inject({ url: '/health' })
  expect(health.statusCode === 200, () => `/health answered ${health.statusCode}`)
}

/** A batch body: the envelope's entries, then `batch` (last: JSON.parse keeps the last of repeated keys). */
function batchText (batch: GeneratedBatch, neighbours: Array<{ text: string }>): { text: string, items: Json[], neighbourIndexes: number[] } {
  const items = [...batch.messages]
  const neighbourIndexes: number[] = []
  neighbours.forEach((n, k) => {
    const at = Math.round((batch.neighbourAt[k] ?? 1) * items.length)
    items.splice(at, 0, n.text)
  })
  for (const n of neighbours) neighbourIndexes.push(items.indexOf(n.text))
  const text = objectText([...batch.envelope, ['"batch"', `[${items.join(',')}]`]])
  return { text, items, neighbourIndexes }
}

/** Bytes that are not UTF-8 (lone continuation bytes, an overlong form, a truncated sequence, a surrogate's encoding). */
const invalidUtf8 = fc.constantFrom([0xff], [0xfe, 0xff], [0x80], [0xc0, 0xaf], [0xe2, 0x82], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xc3])

t.test('any body on any ingestion path: never a 5xx, every 4xx in the documented shape', async (t) => {
  const keyed = (text: string, key: string) => text.startsWith('{') ? `{"writeKey":${JSON.stringify(key)}${text === '{}' ? '' : ','}${text.slice(1)}` : text
  const body = fc.oneof(
    { weight: 3, arbitrary: valueText.map((text) => Buffer.from(text)) },
    { weight: 1, arbitrary: poisonText.map((text) => Buffer.from(text)) },
    { weight: 3, arbitrary: messageText.map((text) => Buffer.from(text)) },
    { weight: 3, arbitrary: generatedBatch.map((batch) => Buffer.from(batchText(batch, []).text)) },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 300 }).map((bytes) => Buffer.from(bytes)) },
    // invalid UTF-8 anywhere in a message, or inside its strings
    {
      weight: 2,
      arbitrary: fc.tuple(messageText, fc.nat(), invalidUtf8).map(([text, at, bytes]) => {
        const cut = at % (text.length + 1)
        return Buffer.concat([Buffer.from(text.slice(0, cut)), Buffer.from(bytes), Buffer.from(text.slice(cut))])
      })
    },
    {
      weight: 2,
      arbitrary: fc.tuple(invalidUtf8, invalidUtf8).map(([a, b]) => Buffer.concat([
        Buffer.from('{"type":"track","userId":"u-'), Buffer.from(a), Buffer.from('","event":"Order Completed","properties":{"x":"'), Buffer.from(b), Buffer.from('"}}')
      ]))
    },
    // cut short, empty, behind a byte-order mark
    { weight: 1, arbitrary: fc.tuple(messageText, fc.nat()).map(([text, at]) => Buffer.from(text.slice(0, at % Math.max(1, text.length)))) },
    { weight: 1, arbitrary: fc.constantFrom(Buffer.alloc(0), Buffer.from(' '), Buffer.from('\ufeff{}'), Buffer.from('\ufeff'), Buffer.from('{"batch":[]}\u0000')) },
    { weight: 1, arbitrary: messageText.map((text) => Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(text)])) }
  )
  const request = fc.record({
    path: fc.constantFrom(...PATHS),
    body,
    auth: fc.constantFrom('basic', 'basic', 'basic', 'basic-no-colon', 'body', 'none', 'unknown'),
    encoding: fc.constantFrom('none', 'none', 'none', 'gzip', 'deflate', 'gzip-but-plain', 'br', 'identity'),
    contentType: fc.constantFrom('application/json', 'application/json', 'text/plain', 'text/plain;charset=UTF-8', 'json', '', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', undefined)
  })
  await checkProperty(t, 'any body', fc.asyncProperty(request, async ({ path, body, auth, encoding, contentType }) => {
    const { writeKey } = anyBodySource
    let bytes = auth === 'body' ? Buffer.from(keyed(body.toString('latin1'), writeKey), 'latin1') : body
    const headers: Record<string, string> = {}
    if (auth === 'basic' || auth === 'unknown') headers.authorization = ingestionHeaders(auth === 'basic' ? writeKey : 'no-such-key').authorization
    if (auth === 'basic-no-colon') headers.authorization = `Basic ${Buffer.from(writeKey).toString('base64')}`
    if (contentType !== undefined) headers['content-type'] = contentType
    if (encoding === 'gzip') bytes = gzipSync(bytes)
    if (encoding === 'deflate') bytes = deflateSync(bytes)
    if (encoding !== 'none') headers['content-encoding'] = encoding === 'gzip-but-plain' ? 'gzip' : encoding
    tally.piiSent += countPii(body.toString('latin1'))
    const answer = await post(fuzz.url, path, bytes, headers)
    checkIngestionAnswer(answer)
    // A key in the header is checked before the body is read; without one, the body gives none.
    if (auth === 'unknown') expect(answer.status === 401, () => `an unknown key answered ${answer.status} ${answer.body.slice(0, 200)}`)
    if (auth === 'none') expect(answer.status !== 200, () => `no key answered 200 ${answer.body.slice(0, 200)}`)
    if (encoding === 'br') expect(answer.status === 415 || answer.status === 401, () => `an unsupported encoding answered ${answer.status}`)
    // What the API stored, the worker processes without a job failing.
    await ingestIdle(fuzz)
    await healthy()
  }), { numRuns: runs(300), seed: 1401 })
})

t.test('batches of adversarial messages: good neighbours always reach Meta', async (t) => {
  const sourceCounts = expected.get(batchSource.id)!
  await checkProperty(t, 'batch with neighbours', fc.asyncProperty(generatedBatch, async (batch) => {
    const neighbours = batch.neighbourAt.map(() => neighbour('batch', NEIGHBOUR_PII))
    const { text, items, neighbourIndexes } = batchText(batch, neighbours)
    tally.messagesSent += items.length
    tally.piiSent += countPii(text)
    const bytes = Buffer.from(text)
    const answer = await post(fuzz.url, '/v1/batch', bytes, ingestionHeaders(batchSource.writeKey))
    const json = checkIngestionAnswer(answer)
    expect([200, 400, 413].includes(answer.status), () => `a batch answered ${answer.status}: ${answer.body.slice(0, 300)}`)
    if (bytes.length > config.MAX_REQUEST_BYTES) expect(answer.status === 413, () => `a body of ${bytes.length} bytes answered ${answer.status}`)
    if (!json.success) {
      // Refused whole: only for the batch's own fields, its size, or its count — never a message's.
      expect(answer.status === 413 || /context|integrations|batch|prototype/.test(json.error), () => `a whole batch refused for ${json.error}`)
      await healthy()
      return
    }
    const rejected = new Map((json.rejected ?? []).map((r) => [r.index, r]))
    sourceCounts.acceptedOrDuplicate += items.length - rejected.size
    sourceCounts.rejected += rejected.size
    tally.accepted += items.length - rejected.size
    tally.rejected += rejected.size
    for (const index of neighbourIndexes) expect(!rejected.has(index), () => `good neighbour ${index} rejected: ${rejected.get(index)!.error}`)
    // 32 KB a message, measured on the message as sent (this text, as spelt).
    const plainBatchKey = !batch.envelope.some(([key]) => key.includes('batch'))
    if (plainBatchKey && bytes.length > config.MAX_MESSAGE_BYTES) {
      items.forEach((item, index) => {
        const size = Buffer.byteLength(item)
        const refusal = rejected.get(index)
        if (size > config.MAX_MESSAGE_BYTES) expect(refusal !== undefined, () => `message ${index} of ${size} bytes accepted`)
        const sizeError = refusal !== undefined && /^message is (\d+) bytes/.exec(refusal.error)
        if (sizeError) expect(Number(sizeError[1]) === size && size > config.MAX_MESSAGE_BYTES, () => `message ${index} of ${size} bytes refused as ${refusal.error}`)
      })
    }
    const missing = await fuzz.undelivered(neighbours.map((n) => n.id))
    tally.neighboursDelivered += neighbours.length - missing.length
    expect(missing.length === 0, () => `good neighbours not delivered: ${missing.join(', ')}`)
    await healthy()
  }), { numRuns: runs(200), seed: 1402 })
})

t.test('single messages on every single-message path', async (t) => {
  const sourceCounts = expected.get(singleSource.id)!
  const single = fc.record({ path: fc.constantFrom(...SINGLE_PATHS), text: messageText, contentType: fc.constantFrom('application/json', 'text/plain') })
  await checkProperty(t, 'single message', fc.asyncProperty(single, async ({ path, text, contentType }) => {
    const bytes = Buffer.from(text)
    const next = neighbour('single', NEIGHBOUR_PII)
    tally.messagesSent += 1
    tally.piiSent += countPii(text)
    // Sent together, the message and a good neighbour usually share one ingest job.
    const [answer, neighbourAnswer] = await Promise.all([
      post(fuzz.url, path, bytes, ingestionHeaders(singleSource.writeKey, contentType)),
      post(fuzz.url, '/v1/batch', Buffer.from(`{"batch":[${next.text}]}`), ingestionHeaders(singleSource.writeKey))
    ])
    const json = checkIngestionAnswer(answer)
    expect(neighbourAnswer.status === 200 && !neighbourAnswer.body.includes('rejected'), () => `the neighbour answered ${neighbourAnswer.status} ${neighbourAnswer.body}`)
    sourceCounts.acceptedOrDuplicate += 1
    expect([200, 400, 413].includes(answer.status), () => `a single message answered ${answer.status}: ${answer.body.slice(0, 300)}`)
    if (answer.status === 413) expect(bytes.length > config.MAX_MESSAGE_BYTES, () => `413 for ${bytes.length} bytes`)
    if (answer.status === 200) expect(bytes.length <= config.MAX_MESSAGE_BYTES, () => `a message of ${bytes.length} bytes accepted`)
    // A message that is a JSON object is counted, accepted or rejected; anything else is not.
    let isObject = false
    try {
      const parsed = JSON.parse(text)
      isObject = typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)
    } catch {}
    if (json.success) {
      sourceCounts.acceptedOrDuplicate += 1
      tally.accepted += 1
    } else if (isObject) {
      sourceCounts.rejected += 1
      tally.rejected += 1
    }
    const missing = await fuzz.undelivered([next.id])
    tally.neighboursDelivered += 1 - missing.length
    expect(missing.length === 0, () => `the good neighbour ${next.id} was not delivered`)
    await ingestIdle(fuzz)
    await healthy()
  }), { numRuns: runs(200), seed: 1403 })
})

t.test('bodies at the limits: 32 KB a message, 4 MB a request', async (t) => {
  const sourceCounts = expected.get(batchSource.id)!
  const limit = config.MAX_MESSAGE_BYTES
  // Messages padded to near the message limit, enough of them to bring the body near the request limit.
  const big = fc.record({
    count: fc.oneof(fc.integer({ min: 1, max: 10 }), fc.integer({ min: 120, max: 132 })),
    sizes: fc.array(fc.integer({ min: -300, max: 40 }), { minLength: 1, maxLength: 4 }),
    unit: fc.constantFrom('x', 'é', '😀', '\\u0000', '\\ud800'),
    pad: fc.integer({ min: 0, max: 200_000 })
  })
  await checkProperty(t, 'limits', fc.asyncProperty(big, async ({ count, sizes, unit, pad }) => {
    const items: string[] = []
    for (let i = 0; i < count; i++) {
      const base = JSON.stringify({ type: 'track', userId: `fz-user-${i}`, event: 'Order Completed', properties: { revenue: 1, pad: '' } })
      const target = limit + sizes[i % sizes.length]
      const unitBytes = Buffer.byteLength(unit === '\\u0000' || unit === '\\ud800' ? unit : JSON.parse(`"${unit}"`))
      const repeat = Math.max(0, Math.floor((target - Buffer.byteLength(base)) / unitBytes))
      items.push(base.replace('"pad":""', `"pad":"${unit.repeat(repeat)}"`))
    }
    const neighbours = [neighbour('limits', NEIGHBOUR_PII), neighbour('limits', NEIGHBOUR_PII)]
    const all = [neighbours[0].text, ...items, neighbours[1].text]
    // A top-level padding field brings the body over the 4 MB limit or just under it.
    const text = `{"pad":"${'p'.repeat(pad)}","batch":[${all.join(',')}]}`
    const bytes = Buffer.from(text)
    tally.messagesSent += all.length
    const answer = await post(fuzz.url, '/v1/batch', bytes, ingestionHeaders(batchSource.writeKey))
    const json = checkIngestionAnswer(answer)
    if (bytes.length > config.MAX_REQUEST_BYTES) {
      expect(answer.status === 413, () => `${bytes.length} bytes answered ${answer.status}`)
      await healthy()
      return
    }
    expect(answer.status === 200 && json.success, () => `${bytes.length} bytes answered ${answer.status} ${answer.body.slice(0, 200)}`)
    const rejected = new Map(((json as { rejected?: Array<{ index: number, error: string }> }).rejected ?? []).map((r) => [r.index, r.error]))
    all.forEach((item, index) => {
      const size = Buffer.byteLength(item)
      expect(rejected.has(index) === (size > limit), () => `message ${index} of ${size} bytes: ${rejected.get(index) ?? 'accepted'}`)
    })
    sourceCounts.acceptedOrDuplicate += all.length - rejected.size
    sourceCounts.rejected += rejected.size
    tally.accepted += all.length - rejected.size
    tally.rejected += rejected.size
    const missing = await fuzz.undelivered(neighbours.map((n) => n.id))
    tally.neighboursDelivered += neighbours.length - missing.length
    expect(missing.length === 0, () => `good neighbours not delivered: ${missing.join(', ')}`)
    await healthy()
  }), { numRuns: runs(5, 0.03), seed: 1404 })
})

t.test('the invariants over every run of this file', async (t) => {
  await finalChecks(t, fuzz, {
    sources: [{ id: anyBodySource.id }, ...[...expected].map(([id, counts]) => ({ id, expected: counts }))],
    destinations: destinations.map((d) => d.id)
  })
})
