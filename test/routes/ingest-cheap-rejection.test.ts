// Cheap rejection first: a request without a known write key costs the service as little as it
// can. A key in the Basic header is checked before the body is read; a body is searched for its
// `writeKey` before it is parsed. Anything malformed is a 4xx, never a 5xx.
import { connect } from 'node:net'
import t from 'tap'
import { basicAuth, buildTestApp } from '../helpers/app.js'
import { send } from '../helpers/ingest-send.js'

const ctx = await buildTestApp(t, { listen: true, env: { ROLE: 'api' } })
const { app } = ctx
const { writeKey } = await ctx.createSource()
const { port } = new URL(ctx.url)

/** Sends headers announcing `contentLength` bytes and only `sent` of them; resolves with the first answer. */
function partialRequest (headers: Record<string, string>, contentLength: number, sent: string, waitMs = 3000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), '127.0.0.1')
    let answer = ''
    const timer = setTimeout(() => { socket.destroy(); resolve(answer) }, waitMs)
    socket.on('data', (chunk) => {
      answer += chunk.toString()
      if (answer.includes('\r\n\r\n')) { clearTimeout(timer); socket.destroy(); resolve(answer) }
    })
    socket.on('error', reject)
    const lines = ['POST /v1/batch HTTP/1.1', `host: 127.0.0.1:${port}`, `content-length: ${contentLength}`, 'content-type: application/json']
    for (const [name, value] of Object.entries(headers)) lines.push(`${name}: ${value}`)
    socket.write(lines.join('\r\n') + '\r\n\r\n' + sent)
  })
}

t.test('an unknown key in the Basic header is refused before the body is read', async (t) => {
  // 4 MB announced, 10 bytes sent: only an answer that did not wait for the body comes back.
  const answer = await partialRequest({ authorization: basicAuth('no-such-key') }, 4 * 1024 * 1024 - 1, '{"batch": ')
  t.match(answer, /^HTTP\/1\.1 401/, '401 without the body')
  t.match(answer, /connection: close/i, 'and the connection is closed rather than read on')
})

t.test('a known key in the header: the body is read as usual', async (t) => {
  const answer = await partialRequest({ authorization: basicAuth(writeKey) }, 1000, '{"batch": ', 500)
  t.equal(answer, '', 'no answer before the body arrives')
})

t.test('without a header, a body that gives no known key is refused before its parse', async (t) => {
  // Malformed JSON would answer 400 if it were parsed first.
  const noKey = await send(app, '/v1/batch', '{"batch": [ not json', { auth: 'none' })
  t.equal(noKey.statusCode, 401)
  t.match(noKey.json().error, /missing write key/)
  const unknown = await send(app, '/v1/batch', '{"writeKey": "nope", "batch": [ not json', { auth: 'none' })
  t.equal(unknown.statusCode, 401)
  t.match(unknown.json().error, /unknown write key/)
  const big = await send(app, '/v1/batch', JSON.stringify({ batch: Array.from({ length: 2000 }, (_, i) => ({ type: 'track', userId: `u${i}`, event: 'E', properties: { pad: 'x'.repeat(1500) } })) }), { auth: 'none' })
  t.equal(big.statusCode, 401, 'a 3 MB body without a key: 401')
})

t.test('a body key is found wherever a client puts it, and spelt as clients spell it', async (t) => {
  t.equal((await send(app, '/v1/track', { userId: 'u1', event: 'E', writeKey }, { auth: 'none' })).statusCode, 200, 'analytics.js: in the message')
  t.equal((await send(app, '/v1/batch', { batch: [{ type: 'track', userId: 'u1', event: 'E', writeKey }] }, { auth: 'none' })).statusCode, 200, 'in a batch\'s message')
  t.equal((await send(app, '/v1/batch', `{ "writeKey" :\n "${writeKey}", "batch": [] }`, { auth: 'none' })).statusCode, 200, 'with whitespace around the colon')
  t.equal((await send(app, '/v1/batch', { writeKey: 'decoy', batch: [], context: { writeKey } }, { auth: 'none' })).statusCode, 401, 'a known key elsewhere in the body does not stand in for the body\'s own')
  // A key with an escape cannot be read without a parse: the body is parsed, then checked.
  t.equal((await send(app, '/v1/batch', `{"writeKey": "${writeKey.replace(/^./, (c) => `\\u00${c.charCodeAt(0).toString(16)}`)}", "batch": []}`, { auth: 'none' })).statusCode, 200, 'an escaped key, parsed')
})

t.test('never a 5xx for what a client sends', async (t) => {
  const deep = '['.repeat(50_000) + ']'.repeat(50_000)
  const cases: Array<[string, string]> = [
    ['a JSON string', '"batch"'],
    ['a number', '42'],
    ['null', 'null'],
    ['an array', '[{"type": "track"}]'],
    ['an escaped "batch" key with deep nesting', `{"\\u0062atch": [{"type": "track", "userId": "u1", "event": "E", "properties": {"deep": ${deep}}}]}`],
    ['deep nesting at the top', `{"batch": [], "context": {"deep": ${deep}}}`],
    ['invalid UTF-8', Buffer.concat([Buffer.from('{"batch": [{"type": "track", "userId": "'), Buffer.from([0xff, 0xfe, 0xc3]), Buffer.from('", "event": "E"}]}')]).toString('latin1')]
  ]
  for (const [name, body] of cases) {
    const response = await send(app, '/v1/batch', body, { writeKey })
    t.ok(response.statusCode >= 200 && response.statusCode < 500, `${name}: ${response.statusCode} ${response.body.slice(0, 120)}`)
    if (response.statusCode >= 400) t.match(response.json(), { success: false, error: String }, `${name}: the error names what is wrong`)
  }
  const single = await send(app, '/v1/track', `{"userId": "u1", "event": "E", "properties": {"deep": ${deep}}}`, { writeKey })
  t.equal(single.statusCode, 400)
  t.match(single.json().error, /nested deeper than 64 levels/)
})
