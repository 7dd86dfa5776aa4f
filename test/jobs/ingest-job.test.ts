import t from 'tap'
import { jobMessages, type StoredRequest } from '../../jobs/queues.js'

const receivedAt = Date.parse('2024-05-01T12:00:00.000Z')

/** A stored request and its body's text, as the worker reads them. */
function stored (body: unknown, extra: Partial<StoredRequest> = {}): [StoredRequest, string] {
  return [{ sourceId: 'src-1', receivedAt, idPrefix: 'relay-req', bodyKey: 'relay:ingest-body:{job}:0', ...extra }, JSON.stringify(body)]
}

function read (...requests: Array<[StoredRequest, string]>) {
  return jobMessages({ requests: requests.map(([request]) => request) }, requests.map(([, body]) => body))
}

t.test('a stored batch becomes its messages, with the server fields the API would have set', async (t) => {
  const messages = read(stored({
    sentAt: '2024-05-01T12:00:10.000Z',
    context: { library: { name: 'analytics-node' } },
    integrations: { All: true },
    writeKey: 'wk-secret',
    batch: [
      { type: 'track', userId: 'u1', event: 'Order Completed', messageId: 'm-1', timestamp: '2024-05-01T12:00:05.000Z' },
      { type: 'track', event: 'no user: rejected by the API' },
      { type: 'identify', userId: 'u2', traits: { plan: 'pro' }, context: { ip: '1.2.3.4' } },
      { type: 'track', userId: 'u3', event: 'Signed Up', messageId: 'm-1' }
    ]
  }, { skip: [1, 3] }))
  t.same(messages.map(([source]) => source), ['src-1', 'src-1'])
  const [[, track], [, identify]] = messages
  t.match(track, {
    type: 'track',
    messageId: 'm-1',
    receivedAt: '2024-05-01T12:00:00.000Z',
    originalTimestamp: '2024-05-01T12:00:05.000Z',
    // receivedAt − (sentAt − timestamp): the client's clock was 10 s fast
    timestamp: '2024-05-01T11:59:55.000Z',
    context: { library: { name: 'analytics-node' } },
    integrations: { All: true }
  })
  t.equal(identify.messageId, 'relay-req-2', 'a message sent without an id gets <idPrefix>-<index>')
  t.same(identify.context, { library: { name: 'analytics-node' }, ip: '1.2.3.4' }, 'the batch context merged in')
  t.notMatch(JSON.stringify(messages), /wk-secret/, 'the write key is not part of a message')
})

t.test('a stored single message takes its type from the path', async (t) => {
  const [[, message]] = read(stored({ userId: 'u1', event: 'Signed Up' }, { pathType: 'track' }))
  t.match(message, { type: 'track', event: 'Signed Up', messageId: 'relay-req-0', receivedAt: '2024-05-01T12:00:00.000Z' })
})

t.test('prepared messages (the audience engine\'s) are read as they are', async (t) => {
  const legacy = { type: 'track', userId: 'u1', event: 'E', messageId: 'old-1', timestamp: 'x', originalTimestamp: 'x', receivedAt: 'x' } as const
  t.same(jobMessages({ messages: [['src-1', legacy]] }), [['src-1', legacy]])
})

t.test('a stored message that no longer passes the checks fails the job (kept for a retry), not silently dropped', async (t) => {
  t.throws(() => read(stored({ batch: [{ type: 'track', event: 'no user' }] })), /stored message 0 no longer passes: userId or anonymousId is required/)
})

t.test('a missing body fails the job, naming its key', async (t) => {
  const [request] = stored({ batch: [] })
  t.throws(() => jobMessages({ requests: [request] }, [null]), /body of stored request 0 \(relay:ingest-body:\{job\}:0\) is missing/)
})

t.test('the duplicate check\'s answer decides which checked messages are processed', async (t) => {
  const batch = (...ids: string[]) => ({ batch: ids.map((messageId) => ({ type: 'track', userId: 'u1', event: 'E', messageId })) })
  // Two requests share the job's answer string: the first's ids are at 0–2, the second's at 3–4.
  const first = stored(batch('a', 'b', 'c'), { checked: { at: 0, indexes: [0, 1, 2] } })
  const second = stored(batch('d', 'x', 'e'), { skip: [1], checked: { at: 3, indexes: [0, 2] } })
  const data = { requests: [first[0], second[0]], dedupAnswer: 'relay:ingest-body:{job}:dedup' }
  const ids = (answer?: string | null) => jobMessages(data, [first[1], second[1]], answer).map(([, m]) => m.messageId)
  t.same(ids('01001'), ['a', 'c', 'd'], "'1': seen before, not processed")
  t.same(ids('00000'), ['a', 'b', 'c', 'd', 'e'])
  t.same(ids(null), ['a', 'b', 'c', 'd', 'e'], 'no answer (the check did not run): nothing is taken for a duplicate')
})

t.test('a stored batch body that is not a JSON object is set aside; the job\'s other requests are read', async (t) => {
  // Found by the fuzz tests (test/fuzz/worker.test.ts): a body of `null` failed the whole job.
  for (const text of ['null', '42', '"batch"', '[{"type": "track", "userId": "u1", "event": "E"}]', 'true']) {
    const setAside: Array<[string, unknown]> = []
    const good = stored({ batch: [{ type: 'track', userId: 'u1', event: 'E', messageId: 'good-1' }] })
    const bad: [StoredRequest, string] = [{ ...good[0], sourceId: 'src-2' }, text]
    const messages = jobMessages({ requests: [bad[0], good[0]] }, [bad[1], good[1]], undefined, (sourceId, error) => { setAside.push([sourceId, error]) })
    t.same(messages.map(([, m]) => m.messageId), ['good-1'], `${text}: the other request's message is read`)
    t.equal(setAside.length, 1, `${text}: set aside once`)
    t.equal(setAside[0][0], 'src-2', `${text}: counted for its own source`)
    t.match(String(setAside[0][1]), /not a JSON object/)
  }
  t.throws(() => read([stored({})[0], 'null']), /not a JSON object/, 'without a handler, the read throws (as for a body that does not parse)')
})
