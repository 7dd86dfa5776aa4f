// The fake Graph API is what every delivery test trusts to say "Meta would reject this": these
// tests pin that it accepts what Meta accepts, rejects what Meta rejects (with the field named),
// and fails exactly as scripted, then recovers.
import { createHash } from 'node:crypto'
import t from 'tap'
import type { Test } from 'tap'
import { appsecretProof, businessUseCaseUsageHeader, startFakeGraph } from './fixtures/fake-graph.js'
import type { FakeGraph, FakeGraphOptions } from './fixtures/fake-graph.js'

type Event = Record<string, any>

const DAY = 24 * 60 * 60
const sha256 = (value: string): string => createHash('sha256').update(value).digest('hex')
const nowSeconds = (): number => Math.floor(Date.now() / 1000)

function capiEvent (overrides: Event = {}): Event {
  return {
    event_name: 'Purchase',
    event_time: nowSeconds() - 60,
    event_id: 'message-1',
    action_source: 'physical_store',
    user_data: { em: [sha256('john_smith@gmail.com')], ph: [sha256('16505551212')], external_id: sha256('user-1') },
    custom_data: { value: 12.5, currency: 'USD', order_id: 'order-1', content_type: 'product', content_ids: ['sku-1'] },
    ...overrides
  }
}

function legacyEvent (overrides: Event = {}): Event {
  return {
    match_keys: { email: [sha256('john_smith@gmail.com')], phone: [sha256('16505551212')], extern_id: 'user-1', gen: sha256('m') },
    event_name: 'Purchase',
    event_time: nowSeconds() - 60,
    value: 12.5,
    currency: 'USD',
    order_id: 'order-1',
    custom_data: { store: 'Main Street' },
    ...overrides
  }
}

async function start (t: Test, options?: FakeGraphOptions): Promise<FakeGraph> {
  const graph = await startFakeGraph(options)
  t.teardown(() => graph.close())
  return graph
}

interface Answer { status: number, body: any, headers: Headers }

async function answer (response: Response): Promise<Answer> {
  const text = await response.text()
  const json = response.headers.get('content-type')?.includes('json') === true
  return { status: response.status, body: json ? JSON.parse(text) : text, headers: response.headers }
}

async function post (graph: FakeGraph, path: string, body: unknown, init: RequestInit = {}): Promise<Answer> {
  return answer(await fetch(graph.url + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
    ...init
  }))
}

async function get (graph: FakeGraph, path: string, init: RequestInit = {}): Promise<Answer> {
  return answer(await fetch(graph.url + path, { redirect: 'manual', ...init }))
}

/** Posts a batch to dataset 111 on v21.0 with the default token. */
async function send (graph: FakeGraph, data: unknown, extra: Event = {}): Promise<Answer> {
  return post(graph, '/v21.0/111/events', { access_token: 'test-token', upload_tag: 'Segment', data, ...extra })
}

t.test('a valid Conversions API batch is accepted and recorded', async (t) => {
  const graph = await start(t)
  const events = [capiEvent(), capiEvent({ event_name: 'Store Visit', event_id: 'message-2', custom_data: undefined })]
  const res = await send(graph, events, { test_event_code: 'TEST123' })
  t.equal(res.status, 200)
  t.equal(res.body.events_received, 2)
  t.same(res.body.messages, [])
  t.type(res.body.fbtrace_id, 'string')
  t.equal(graph.requests, 1)
  t.equal(graph.received.length, 1)
  const [batch] = graph.received
  t.equal(batch.datasetId, '111')
  t.equal(batch.version, 'v21.0')
  t.equal(batch.body.upload_tag, 'Segment')
  t.equal(batch.body.test_event_code, 'TEST123')
  t.notOk('access_token' in batch.body, 'the token is not kept with the batch')
  t.type(batch.at, 'number')
  t.same(graph.events().map((event) => event.event_id), ['message-1', 'message-2'])
  t.same(graph.events('111').length, 2)
  t.same(graph.events('222'), [])
})

t.test('a form-encoded body with data as a JSON string is accepted', async (t) => {
  const graph = await start(t)
  const form = new URLSearchParams({ access_token: 'test-token', data: JSON.stringify([capiEvent()]), upload_tag: 'Segment' })
  const res = await answer(await fetch(`${graph.url}/v21.0/111/events`, { method: 'POST', body: form }))
  t.equal(res.status, 200)
  t.equal(res.body.events_received, 1)
  t.equal(graph.received[0].body.upload_tag, 'Segment')
  t.equal(graph.events()[0].event_name, 'Purchase')

  const broken = new URLSearchParams({ access_token: 'test-token', data: '[{' })
  const bad = await answer(await fetch(`${graph.url}/v21.0/111/events`, { method: 'POST', body: broken }))
  t.equal(bad.body.error.code, 100)
  t.match(bad.body.error.message, /data must be a JSON-encoded array/)
})

t.test('an invalid event fails the whole request with code 100 naming the field', async (t) => {
  const graph = await start(t)
  const cases: Array<[string, (event: Event) => void, string, number?]> = [
    ['no event_name', (e) => { delete e.event_name }, 'event_name'],
    ['empty event_name', (e) => { e.event_name = '' }, 'event_name'],
    ['event_time as a string', (e) => { e.event_time = String(e.event_time) }, 'event_time'],
    ['event_time not whole seconds', (e) => { e.event_time = Date.now() / 1000 }, 'event_time'],
    ['event_time in milliseconds', (e) => { e.event_time = Date.now() }, 'event_time', 2804004],
    ['event_time 11 minutes ahead', (e) => { e.event_time = nowSeconds() + 11 * 60 }, 'event_time', 2804004],
    ['a website event 8 days old', (e) => { e.action_source = 'website'; e.event_time = nowSeconds() - 8 * DAY }, 'event_time', 2804003],
    ['a store event 63 days old', (e) => { e.event_time = nowSeconds() - 63 * DAY }, 'event_time', 2804003],
    ['no action_source', (e) => { delete e.action_source }, 'action_source'],
    ['an unknown action_source', (e) => { e.action_source = 'store' }, 'action_source'],
    ['no user_data', (e) => { delete e.user_data }, 'user_data'],
    ['a raw email', (e) => { e.user_data.em = ['john@example.com'] }, 'user_data.em'],
    ['an upper-case hash', (e) => { e.user_data.ph = sha256('16505551212').toUpperCase() }, 'user_data.ph'],
    ['an empty hash array', (e) => { e.user_data.em = [] }, 'user_data.em'],
    ['a null in a hash array', (e) => { e.user_data.em = [sha256('john@example.com'), null] }, 'user_data.em'],
    ['a raw city', (e) => { e.user_data.ct = 'newyork' }, 'user_data.ct'],
    ['a hashed lead_id', (e) => { e.user_data.lead_id = sha256('1234') }, 'user_data.lead_id'],
    ['a legacy key in user_data', (e) => { e.user_data.email = e.user_data.em }, 'user_data.email'],
    ['no customer information', (e) => { e.user_data = {} }, 'user_data'],
    ['only address and gender', (e) => { e.user_data = { ct: sha256('newyork'), st: sha256('ny'), country: sha256('us'), zp: sha256('10001'), ge: sha256('m') } }, 'user_data'],
    ['only first name and gender', (e) => { e.user_data = { fn: sha256('john'), ge: sha256('m') } }, 'user_data'],
    ['only a birthday', (e) => { e.user_data = { db: sha256('19970216') } }, 'user_data'],
    ['a value as a string', (e) => { e.custom_data.value = '12.5' }, 'custom_data.value'],
    ['a Purchase without value', (e) => { delete e.custom_data.value }, 'custom_data.value'],
    ['a Purchase without custom_data', (e) => { delete e.custom_data }, 'custom_data.value'],
    ['a Purchase without currency', (e) => { delete e.custom_data.currency }, 'custom_data.currency'],
    ['a 2-letter currency', (e) => { e.custom_data.currency = 'US' }, 'custom_data.currency'],
    ['numeric content_ids', (e) => { e.custom_data.content_ids = [1, 2] }, 'custom_data.content_ids'],
    ['a legacy top-level value', (e) => { e.value = 12.5 }, 'value'],
    ['an unknown data processing option', (e) => { e.data_processing_options = ['XYZ'] }, 'data_processing_options'],
    ['LDU without a country', (e) => { e.data_processing_options = ['LDU'] }, 'data_processing_options_country'],
    ['a non-integer LDU state', (e) => { e.data_processing_options = ['LDU']; e.data_processing_options_country = 1; e.data_processing_options_state = 'CA' }, 'data_processing_options_state']
  ]
  for (const [name, mutate, field, subcode] of cases) {
    const bad = capiEvent()
    mutate(bad)
    // the bad event sits between good ones: Meta fails the request, not just the event
    const res = await send(graph, [capiEvent(), bad, capiEvent()])
    t.equal(res.status, 400, `${name}: HTTP 400`)
    t.equal(res.body.error.code, 100, `${name}: code 100`)
    t.equal(res.body.error.type, 'OAuthException')
    t.equal(res.body.error.is_transient, false)
    t.match(res.body.error.message, `data[1].${field}`, `${name}: the message names data[1].${field}`)
    t.same(res.body.error.error_data, { event_index: 1, field }, `${name}: error_data names the event and field`)
    t.equal(res.body.error.error_subcode, subcode, `${name}: subcode ${subcode ?? 'none'}`)
  }
  t.equal(graph.received.length, 0, 'nothing of a rejected request is recorded')
  t.equal(graph.requests, cases.length)
})

t.test('events Meta takes are accepted', async (t) => {
  const graph = await start(t)
  const cases: Array<[string, Event]> = [
    ['a store event 61 days old', { event_time: nowSeconds() - 61 * DAY }],
    ['a website event 6 days old', { action_source: 'website', event_time: nowSeconds() - 6 * DAY }],
    ['an event 5 minutes ahead (clock skew)', { event_time: nowSeconds() + 5 * 60 }],
    ['a single hash instead of an array', { user_data: { em: sha256('a@b.c') } }],
    ['address made strong by a user id', { user_data: { ct: sha256('newyork'), st: sha256('ny'), external_id: sha256('user-1') } }],
    ['first and last name with gender', { user_data: { fn: sha256('john'), ln: sha256('smith'), ge: sha256('m') } }],
    ['a lead id alone, unhashed', { user_data: { lead_id: '1234567890' } }],
    ['a numeric lead id', { user_data: { lead_id: 1234567890 } }],
    ['a Lead without custom_data', { event_name: 'Lead', custom_data: undefined }],
    ['a custom event name', { event_name: 'Audience Entered', custom_data: { audience: 'vip' } }],
    ['LDU off', { data_processing_options: [] }],
    ['LDU with geolocation', { data_processing_options: ['LDU'], data_processing_options_country: 0, data_processing_options_state: 0 }],
    ['LDU in California', { data_processing_options: ['LDU'], data_processing_options_country: 1, data_processing_options_state: 1000 }]
  ]
  for (const [name, overrides] of cases) {
    const event = JSON.parse(JSON.stringify(capiEvent(overrides)))
    const res = await send(graph, [event])
    t.equal(res.status, 200, `${name}: ${res.status === 200 ? 'accepted' : res.body.error?.message}`)
  }
  t.equal(graph.received.length, cases.length)
})

t.test('a malformed batch fails with code 100 naming data', async (t) => {
  const graph = await start(t)
  const missing = await post(graph, '/v21.0/111/events', { access_token: 'test-token' })
  t.match(missing.body.error, { code: 100, message: /parameter data is required/ })
  const notArray = await send(graph, { event_name: 'Purchase' })
  t.match(notArray.body.error, { code: 100, message: /data must be an array/ })
  const empty = await send(graph, [])
  t.match(empty.body.error, { code: 100, message: /at least one event/ })
  const notObject = await send(graph, ['Purchase'])
  t.match(notObject.body.error, { code: 100, message: /data\[0\] must be an object/, error_data: { event_index: 0 } })
  const badJson = await post(graph, '/v21.0/111/events', undefined, { body: '{"data": [' })
  t.match(badJson.body.error, { code: 100, message: /not valid JSON/ })
  const badTestCode = await send(graph, [capiEvent()], { test_event_code: 123 })
  t.match(badTestCode.body.error, { code: 100, message: /test_event_code must be a string/ })
  const xml = await answer(await fetch(`${graph.url}/v21.0/111/events`, { method: 'POST', headers: { 'content-type': 'text/xml' }, body: '<data/>' }))
  t.match(xml.body.error, { code: 100, message: /Unsupported Content-Type/ })
  t.equal(graph.received.length, 0)
})

t.test('batch size limits: 1,000 Conversions API events, 2,000 legacy events', async (t) => {
  const graph = await start(t)
  const capi = Array.from({ length: 1000 }, (_, i) => capiEvent({ event_id: `m-${i}` }))
  t.equal((await send(graph, capi)).body.events_received, 1000)
  const tooMany = await send(graph, [...capi, capiEvent()])
  t.equal(tooMany.status, 400)
  t.match(tooMany.body.error, { code: 100, message: /at most 1000 events/ })

  const legacy = Array.from({ length: 2000 }, () => legacyEvent())
  const body = (data: Event[]): Event => ({ access_token: 'test-token', upload_tag: 'Segment', data })
  t.equal((await post(graph, '/v16.0/111/events', body(legacy))).body.num_processed_entries, 2000)
  const tooManyLegacy = await post(graph, '/v16.0/111/events', body([...legacy, legacyEvent()]))
  t.match(tooManyLegacy.body.error, { code: 100, message: /at most 2000 events/ })
  t.same(graph.received.map((batch) => batch.body.data.length), [1000, 2000])
})

t.test('access tokens', async (t) => {
  const graph = await start(t)

  t.test('a token in the URL is rejected, even a valid one', async (t) => {
    const res = await post(graph, '/v21.0/111/events?access_token=test-token', { data: [capiEvent()] })
    t.equal(res.status, 400)
    t.match(res.body.error, { code: 100, message: /access_token must not be in the URL/ })
    const both = await post(graph, '/v21.0/111/events?access_token=test-token', { access_token: 'test-token', data: [capiEvent()] })
    t.match(both.body.error, { code: 100, message: /access_token must not be in the URL/ })
  })

  t.test('a missing token answers 104, an Authorization header does not count', async (t) => {
    const res = await post(graph, '/v21.0/111/events', { data: [capiEvent()] }, {
      headers: { 'content-type': 'application/json', authorization: 'Bearer test-token' }
    })
    t.match(res.body.error, { code: 104, message: /access token is required/ })
  })

  t.test('an unknown token answers 190', async (t) => {
    const res = await post(graph, '/v21.0/111/events', { access_token: 'nope', data: [capiEvent()] })
    t.equal(res.status, 400)
    t.match(res.body.error, { code: 190, type: 'OAuthException' })
  })

  t.test('a revoked token answers 190 until it is added again', async (t) => {
    graph.revokeToken('test-token')
    const revoked = await send(graph, [capiEvent()])
    t.equal(revoked.status, 400)
    t.match(revoked.body.error, { code: 190, error_subcode: 458, is_transient: false })
    graph.addToken('test-token')
    t.equal((await send(graph, [capiEvent()])).status, 200)
  })

  t.test('added tokens work beside the default one', async (t) => {
    graph.addToken('system-user-token')
    const res = await post(graph, '/v21.0/111/events', { access_token: 'system-user-token', data: [capiEvent()] })
    t.equal(res.status, 200)
  })
})

t.test('datasets and versions', async (t) => {
  const graph = await start(t, { datasets: ['111'] })
  const unknown = await post(graph, '/v21.0/222/events', { access_token: 'test-token', data: [capiEvent()] })
  t.equal(unknown.status, 400)
  t.match(unknown.body.error, { code: 100, error_subcode: 33, message: /Object with ID '222' does not exist/ })

  const ok = await get(graph, '/v21.0/111?fields=id,name,is_consolidated_container&access_token=test-token')
  t.same(ok.body, { id: '111', name: 'Dataset 111', is_consolidated_container: true })
  const bearer = await get(graph, '/v21.0/111?fields=id,name', { headers: { authorization: 'Bearer test-token' } })
  t.same(bearer.body, { id: '111', name: 'Dataset 111' })
  t.match((await get(graph, '/v21.0/222?access_token=test-token')).body.error, { code: 100, error_subcode: 33 })
  t.match((await get(graph, '/v21.0/111?access_token=nope')).body.error, { code: 190 })

  const capiOnLegacyVersion = await post(graph, '/v16.0/111/events', { access_token: 'test-token', data: [capiEvent()] })
  t.match(capiOnLegacyVersion.body.error, { code: 100, message: /need v17.0 or later/ })
  const noVersion = await post(graph, '/111/events', { access_token: 'test-token', data: [capiEvent()] })
  t.match(noVersion.body.error, { code: 100, message: /Unknown API version/ })
  const badVersion = await post(graph, '/latest/111/events', { access_token: 'test-token', data: [capiEvent()] })
  t.match(badVersion.body.error, { code: 100, message: /Unknown API version 'latest'/ })

  const other = await start(t)
  const nonNumeric = await post(other, '/v21.0/abc/events', { access_token: 'test-token', data: [capiEvent()] })
  t.match(nonNumeric.body.error, { code: 100, error_subcode: 33 }, 'by default only numeric dataset ids exist')
  t.equal((await post(other, '/v21.0/987654321/events', { access_token: 'test-token', data: [capiEvent()] })).status, 200)

  const getEvents = await get(other, '/v21.0/111/events?access_token=test-token')
  t.match(getEvents.body.error, { code: 100, message: /Unsupported get request/ })
  t.equal(other.requests, 3, 'every request to /events is counted, accepted or not')
  const unknownPath = await get(other, '/v21.0/111/adspixels/extra')
  t.match(unknownPath.body.error, { code: 2500, message: /Unknown path components/ })
})

t.test('the legacy offline-event-set format', async (t) => {
  const graph = await start(t)
  const body = (data: Event[]): Event => ({ access_token: 'test-token', upload_tag: 'Segment', data })

  t.test('is accepted on v16.0 and answered as the legacy API did', async (t) => {
    const res = await post(graph, '/v16.0/111/events', body([legacyEvent(), legacyEvent({ event_name: 'Other', value: undefined, currency: undefined })]))
    t.equal(res.status, 200)
    t.same(res.body, { id: '111', num_processed_entries: 2 })
    t.equal(graph.received.at(-1)?.version, 'v16.0')
    t.equal(graph.received.at(-1)?.body.upload_tag, 'Segment')
  })

  t.test('is rejected on later versions', async (t) => {
    const res = await post(graph, '/v21.0/111/events', body([legacyEvent()]))
    t.equal(res.status, 400)
    t.match(res.body.error, { code: 100, message: /offline event sets are not supported on v21.0/i })
  })

  t.test('accepts what the seed sends: lead id, LDU, custom_data, lower-case enum', async (t) => {
    const event = legacyEvent({
      event_name: 'lead',
      value: undefined,
      currency: undefined,
      match_keys: { lead_id: '1234567890', doby: sha256('1997'), dobm: sha256('02'), dobd: sha256('16') },
      data_processing_options: [],
      data_processing_options_country: 1,
      data_processing_options_state: 1000,
      content_type: 'product',
      content_ids: ['sku-1']
    })
    const res = await post(graph, '/v16.0/111/events', body([JSON.parse(JSON.stringify(event))]))
    t.equal(res.status, 200, res.body.error?.message)
  })

  t.test('validates each event', async (t) => {
    const cases: Array<[string, (event: Event) => void, string]> = [
      ['no match_keys on one event', (e) => { delete e.match_keys }, 'match_keys'],
      ['a hashed extern_id', (e) => { e.match_keys.extern_id = sha256('user-1') }, 'match_keys.extern_id'],
      ['an email that is not an array', (e) => { e.match_keys.email = sha256('a@b.c') }, 'match_keys.email'],
      ['a raw zip', (e) => { e.match_keys.zip = '10001' }, 'match_keys.zip'],
      ['a CAPI key in match_keys', (e) => { e.match_keys.em = [sha256('a@b.c')] }, 'match_keys.em'],
      ['a hashed lead_id', (e) => { e.match_keys = { lead_id: sha256('1') } }, 'match_keys.lead_id'],
      ['only gender and city', (e) => { e.match_keys = { gen: sha256('m'), ct: sha256('newyork') } }, 'match_keys'],
      ['an event name outside the enum', (e) => { e.event_name = 'Visit' }, 'event_name'],
      ['a Purchase without value', (e) => { delete e.value }, 'value'],
      ['a value without currency', (e) => { delete e.currency }, 'currency'],
      ['a value as a string', (e) => { e.value = '12.5' }, 'value'],
      ['an unknown content_type', (e) => { e.content_type = 'thing' }, 'content_type'],
      ['LDU that is not a list', (e) => { e.data_processing_options = 'LDU' }, 'data_processing_options'],
      ['a non-integer LDU country', (e) => { e.data_processing_options = ['LDU']; e.data_processing_options_country = 'US' }, 'data_processing_options_country'],
      ['a 63-day-old event', (e) => { e.event_time = nowSeconds() - 63 * DAY }, 'event_time'],
      ['CAPI user_data on a legacy event', (e) => { e.user_data = { em: [sha256('a@b.c')] } }, 'user_data']
    ]
    for (const [name, mutate, field] of cases) {
      const bad = legacyEvent()
      mutate(bad)
      const res = await post(graph, '/v16.0/111/events', body([legacyEvent(), bad]))
      t.equal(res.status, 400, `${name}: HTTP 400`)
      t.match(res.body.error, { code: 100, error_data: { event_index: 1, field } }, `${name}: names ${field}`)
      t.match(res.body.error.message, `data[1].${field}`)
    }
  })
})

t.test('scripted failures behave as scripted, then the fake recovers', async (t) => {
  const graph = await start(t)

  t.test('http 503 with a body that is not JSON', async (t) => {
    graph.reset()
    graph.failNext({ kind: 'http', status: 503 })
    const failed = await send(graph, [capiEvent()])
    t.equal(failed.status, 503)
    t.type(failed.body, 'string')
    t.equal((await send(graph, [capiEvent()])).status, 200)
    t.equal(graph.requests, 2)
    t.equal(graph.received.length, 1, 'only the accepted batch is recorded')
  })

  t.test('reset: the socket is destroyed', async (t) => {
    graph.reset()
    graph.failNext({ kind: 'reset' })
    await t.rejects(send(graph, [capiEvent()]), { name: 'TypeError' })
    t.equal((await send(graph, [capiEvent()])).status, 200)
    t.equal(graph.requests, 2)
  })

  t.test('code 4 with HTTP 429 and the app usage header', async (t) => {
    graph.reset()
    graph.failNext({ kind: 'graph', status: 429, code: 4 })
    const limited = await send(graph, [capiEvent()])
    t.equal(limited.status, 429)
    t.match(limited.body.error, { code: 4, type: 'OAuthException', is_transient: true, message: /request limit/ })
    t.type(limited.body.error.fbtrace_id, 'string')
    t.match(JSON.parse(limited.headers.get('x-app-usage') ?? '{}'), { call_count: 100 })
    t.equal((await send(graph, [capiEvent()])).status, 200)
  })

  t.test('code 80004 with X-Business-Use-Case-Usage', async (t) => {
    graph.reset()
    graph.failNext({ kind: 'graph', code: 80004, headers: { 'X-Business-Use-Case-Usage': businessUseCaseUsageHeader(7) } })
    const limited = await send(graph, [capiEvent()])
    t.equal(limited.status, 400)
    t.match(limited.body.error, { code: 80004, error_subcode: 2446079, is_transient: true })
    const usage = JSON.parse(limited.headers.get('x-business-use-case-usage') ?? '{}')
    const [entry] = Object.values(usage) as any[][]
    t.equal(entry[0].estimated_time_to_regain_access, 7)
    t.equal(entry[0].type, 'ads_management')

    graph.failNext({ kind: 'graph', code: 80004 })
    const defaulted = await send(graph, [capiEvent()])
    t.ok(defaulted.headers.get('x-business-use-case-usage'), 'a default usage header when none is scripted')
    t.equal((await send(graph, [capiEvent()])).status, 200)
  })

  t.test('other rate-limit codes, with the scripted fields', async (t) => {
    graph.reset()
    graph.failNext({ kind: 'graph', code: 17, subcode: 2446079 })
    graph.failNext({ kind: 'graph', code: 613, status: 429, message: 'Calls to this api have exceeded the rate limit.', isTransient: false })
    t.match((await send(graph, [capiEvent()])).body.error, { code: 17, error_subcode: 2446079, is_transient: true })
    const custom = await send(graph, [capiEvent()])
    t.equal(custom.status, 429)
    t.match(custom.body.error, { code: 613, message: 'Calls to this api have exceeded the rate limit.', is_transient: false })
    t.equal((await send(graph, [capiEvent()])).status, 200)
  })

  t.test('code 190, 10 and 200 answer 400; codes 1 and 2 answer 500', async (t) => {
    graph.reset()
    for (const code of [190, 10, 200, 1, 2]) graph.failNext({ kind: 'graph', code })
    const expected: Array<[number, number, boolean]> = [[190, 400, false], [10, 400, false], [200, 400, false], [1, 500, true], [2, 500, true]]
    for (const [code, status, transient] of expected) {
      const res = await send(graph, [capiEvent()])
      t.equal(res.status, status, `code ${code}: HTTP ${status}`)
      t.match(res.body.error, { code, is_transient: transient })
    }
    t.equal((await send(graph, [capiEvent()])).status, 200, 'a scripted 190 leaves the token valid')
  })

  t.test('times, FIFO order and a dataset match', async (t) => {
    graph.reset()
    graph.failNext({ kind: 'http', status: 500 }, 2)
    graph.failNext({ kind: 'http', status: 502 })
    graph.failNext({ kind: 'http', status: 504 }, 1, { datasetId: '222' })
    const ok222 = await post(graph, '/v21.0/222/events', { access_token: 'test-token', data: [capiEvent()] })
    t.equal(ok222.status, 500, 'the first matching entry is used, whatever the dataset')
    const statuses = []
    for (let i = 0; i < 3; i++) statuses.push((await send(graph, [capiEvent()])).status)
    t.same(statuses, [500, 502, 200], 'the 504 waits for dataset 222')
    t.equal((await post(graph, '/v21.0/222/events', { access_token: 'test-token', data: [capiEvent()] })).status, 504)
    t.equal((await post(graph, '/v21.0/222/events', { access_token: 'test-token', data: [capiEvent()] })).status, 200)
    t.throws(() => graph.failNext({ kind: 'reset' }, 0), RangeError)
  })

  t.test('failEventsWhere: one flagged event fails its whole batch with code 100', async (t) => {
    graph.reset()
    graph.failEventsWhere((event) => event.event_id === 'poison', 'Event rejected by the test')
    const res = await send(graph, [capiEvent(), capiEvent({ event_id: 'poison' }), capiEvent()])
    t.equal(res.status, 400)
    t.match(res.body.error, { code: 100, is_transient: false, error_data: { event_index: 1 } })
    t.match(res.body.error.message, /Event rejected by the test \(data\[1\]\)/)
    t.equal((await send(graph, [capiEvent(), capiEvent()])).status, 200, 'batches without it pass')
    t.equal(graph.received.length, 1)
    graph.reset()
    t.equal((await send(graph, [capiEvent({ event_id: 'poison' })])).status, 200, 'reset() clears the rule')
  })

  t.test('reset() clears batches, counts and scripted failures', async (t) => {
    graph.failNext({ kind: 'http', status: 503 }, 5)
    graph.reset()
    t.equal(graph.requests, 0)
    t.same(graph.received, [])
    t.equal((await send(graph, [capiEvent()])).status, 200)
  })
})

t.test('timeout holds the request until the client aborts, then recovers', async (t) => {
  const graph = await start(t)
  graph.failNext({ kind: 'timeout' })
  // a TimeoutError (not a response, not a reset) means the server held the request open
  await t.rejects(post(graph, '/v21.0/111/events', { access_token: 'test-token', data: [capiEvent()] }, { signal: AbortSignal.timeout(300) }),
    { name: 'TimeoutError' })
  t.equal((await send(graph, [capiEvent()])).status, 200)
  t.equal(graph.requests, 2)
  t.equal(graph.received.length, 1)

  // a request still held when the fake closes must not keep close() waiting
  graph.failNext({ kind: 'timeout' })
  const held = send(graph, [capiEvent()])
  await new Promise((resolve) => setTimeout(resolve, 100))
  await graph.close()
  await t.rejects(held)
  await graph.close()
  t.pass('close() can be called twice')
})

t.test('appsecret_proof', async (t) => {
  const graph = await start(t, { appSecret: 'app-secret' })
  const proof = appsecretProof('test-token', 'app-secret')

  const missing = await send(graph, [capiEvent()])
  t.match(missing.body.error, { code: 100, message: /require an appsecret_proof/ })
  const wrong = await send(graph, [capiEvent()], { appsecret_proof: appsecretProof('test-token', 'other-secret') })
  t.match(wrong.body.error, { code: 100, message: /Invalid appsecret_proof/ })
  t.equal((await send(graph, [capiEvent()], { appsecret_proof: proof })).status, 200)
  // the proof is no secret, so it may travel in the query string with a token in the body
  t.equal((await post(graph, `/v21.0/111/events?appsecret_proof=${proof}`, { access_token: 'test-token', data: [capiEvent()] })).status, 200)
  t.match(proof, /^[0-9a-f]{64}$/, 'the proof is HMAC-SHA256 hex')

  t.match((await get(graph, '/v21.0/me?access_token=test-token')).body.error, { code: 100 })
  t.same((await get(graph, `/v21.0/me?access_token=test-token&appsecret_proof=${proof}`)).body, { id: '10000000000001', name: 'Fake Graph User' })

  const optional = await start(t, { appSecret: 'app-secret', requireAppsecretProof: false })
  t.equal((await send(optional, [capiEvent()])).status, 200, 'an app may leave the proof optional')
})

t.test('OAuth: code → short-lived token → long-lived token, usable for events', async (t) => {
  let clock = Date.now()
  const graph = await start(t, { appId: 'app-1', appSecret: 'app-secret', requireAppsecretProof: false, now: () => clock })
  const redirectUri = 'http://127.0.0.1:3000/v1/oauth/facebook/callback'
  const dialog = (extra = ''): string =>
    `/v21.0/dialog/oauth?client_id=app-1&redirect_uri=${encodeURIComponent(redirectUri)}&state=xyz&scope=ads_management,public_profile${extra}`

  const redirect = await get(graph, dialog())
  t.equal(redirect.status, 302)
  const location = new URL(redirect.headers.get('location') ?? '')
  t.equal(location.origin + location.pathname, redirectUri)
  t.equal(location.searchParams.get('state'), 'xyz')
  const code = location.searchParams.get('code') ?? ''
  t.ok(code.length > 20, 'a code comes back')

  const unversioned = await get(graph, `/dialog/oauth?client_id=app-1&redirect_uri=${encodeURIComponent(redirectUri)}`)
  t.equal(unversioned.status, 302, '/dialog/oauth without a version works too')
  t.match((await get(graph, '/v21.0/dialog/oauth?client_id=other&redirect_uri=http://x/')).body.error, { code: 101 })
  t.match((await get(graph, '/v21.0/dialog/oauth?client_id=app-1&redirect_uri=not-a-url')).body.error, { code: 191 })

  // A POST with a form body, as the relay sends it
  const exchange = async (params: Record<string, string>): Promise<Answer> => answer(await fetch(`${graph.url}/v21.0/oauth/access_token`, {
    method: 'POST',
    body: new URLSearchParams({ client_id: 'app-1', client_secret: 'app-secret', redirect_uri: redirectUri, ...params })
  }))

  // Meta takes the GET form too; this fake refuses a secret in a URL
  const inUrl = await get(graph, `/v21.0/oauth/access_token?${new URLSearchParams({ client_id: 'app-1', client_secret: 'app-secret', redirect_uri: redirectUri, code })}`)
  t.equal(inUrl.status, 400)
  t.match(inUrl.body.error, { code: 100, message: /client_secret must not be in the URL/ })
  t.match(graph.tokenRequests.at(-1), { method: 'GET', status: 400 }, 'token requests are recorded')

  const wrongSecret = await exchange({ code, client_secret: 'nope' })
  t.equal(wrongSecret.status, 400)
  t.match(wrongSecret.body.error, { type: 'OAuthException', message: 'Error validating client secret.' })
  t.match((await exchange({ code, client_id: 'other' })).body.error, { code: 101 })
  t.match((await exchange({ code, redirect_uri: 'http://127.0.0.1:3000/elsewhere' })).body.error, { code: 100, error_subcode: 36008 })
  t.match((await exchange({ code: 'made-up' })).body.error, { code: 100 })

  const short = await exchange({ code })
  t.equal(short.status, 200)
  t.match(short.body, { access_token: /^EAA/, token_type: 'bearer', expires_in: 3600 })
  t.match((await exchange({ code })).body.error, { code: 100, error_subcode: 36009 }, 'a code works once')

  const long = await exchange({ grant_type: 'fb_exchange_token', fb_exchange_token: short.body.access_token })
  t.equal(long.status, 200)
  t.match(long.body, { access_token: /^EAA/, token_type: 'bearer', expires_in: 60 * 24 * 60 * 60 })
  t.not(long.body.access_token, short.body.access_token)
  t.match((await exchange({ grant_type: 'fb_exchange_token', fb_exchange_token: 'nope' })).body.error, { code: 190 })

  t.match(graph.tokenRequests.at(-1), { method: 'POST', url: '/v21.0/oauth/access_token', contentType: /^application\/x-www-form-urlencoded/, status: 400 })
  t.match(graph.tokenRequests.filter((r) => r.status === 200), [{ method: 'POST' }, { method: 'POST' }], 'the two that issued tokens')

  const me = await get(graph, `/v21.0/me?access_token=${long.body.access_token}`)
  t.same(me.body, { id: '10000000000001', name: 'Fake Graph User' })

  const event = (): Event => capiEvent({ event_time: Math.floor(clock / 1000) - 60 })
  const withLong = await post(graph, '/v21.0/111/events', { access_token: long.body.access_token, data: [event()] })
  t.equal(withLong.status, 200)
  t.equal((await post(graph, '/v21.0/111/events', { access_token: short.body.access_token, data: [event()] })).status, 200)

  clock += 2 * 60 * 60 * 1000
  const expired = await post(graph, '/v21.0/111/events', { access_token: short.body.access_token, data: [event()] })
  t.match(expired.body.error, { code: 190, error_subcode: 463 }, 'the short-lived token expires')
  t.equal((await post(graph, '/v21.0/111/events', { access_token: long.body.access_token, data: [event()] })).status, 200)
  graph.revokeToken(long.body.access_token)
  t.match((await post(graph, '/v21.0/111/events', { access_token: long.body.access_token, data: [event()] })).body.error, { code: 190 })

  graph.denyNextAuthorization()
  const denied = new URL((await get(graph, dialog())).headers.get('location') ?? '')
  t.equal(denied.searchParams.get('error'), 'access_denied')
  t.equal(denied.searchParams.get('error_reason'), 'user_denied')
  t.equal(denied.searchParams.get('state'), 'xyz')
  t.notOk(denied.searchParams.has('code'))
  t.ok(new URL((await get(graph, dialog())).headers.get('location') ?? '').searchParams.has('code'), 'only the next one is denied')
})

t.test('hooks see accepted and rejected batches', async (t) => {
  const accepted: string[] = []
  const rejected: Array<number | string | undefined> = []
  const graph = await start(t, {
    onBatch: (batch) => accepted.push(batch.datasetId),
    onReject: (rejection) => rejected.push(rejection.error?.code ?? rejection.scripted)
  })
  await send(graph, [capiEvent()])
  await send(graph, [capiEvent({ event_name: '' })])
  graph.failNext({ kind: 'reset' })
  await send(graph, [capiEvent()]).catch(() => {})
  graph.failNext({ kind: 'http', status: 503 })
  await send(graph, [capiEvent()])
  t.same(accepted, ['111'])
  t.same(rejected, [100, 'reset', 'http'])
})
