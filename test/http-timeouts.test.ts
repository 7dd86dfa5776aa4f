import { connect } from 'node:net'
import t from 'tap'
import { basicAuth, buildTestApp } from './helpers/app.js'

interface RawAnswer {
  /** What the server wrote before it closed the connection. */
  text: string
  /** Milliseconds from the connection to its close. */
  closedAfterMs: number
}

/**
 * A raw connection that sends `head`, then `drip` every `everyMs` until the server closes it (or
 * `giveUpMs` passes: the test then fails on the answer).
 */
function dribble (url: string, head: string, drip: string, everyMs: number, giveUpMs = 15_000): Promise<RawAnswer> {
  const { port, hostname } = new URL(url)
  return new Promise((resolve) => {
    const started = Date.now()
    const socket = connect(Number(port), hostname)
    let text = ''
    const timer = setInterval(() => { if (!socket.destroyed) socket.write(drip) }, everyMs)
    const giveUp = setTimeout(() => socket.destroy(), giveUpMs)
    socket.on('data', (chunk) => { text += String(chunk) })
    socket.on('error', () => {})
    socket.on('close', () => {
      clearInterval(timer)
      clearTimeout(giveUp)
      resolve({ text, closedAfterMs: Date.now() - started })
    })
    socket.write(head)
  })
}

const SHORT = { ROLE: 'api', HTTP_REQUEST_TIMEOUT_MS: '1000', HTTP_HEADERS_TIMEOUT_MS: '500' }

t.test('a body sent too slowly is answered 408 and its connection closed; other requests are served meanwhile', async (t) => {
  const ctx = await buildTestApp(t, { listen: true, env: SHORT })
  const source = await ctx.createSource()
  // Far more body than the dribble would send in the test's time: a byte every 100 ms.
  const head = 'POST /v1/batch HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n' +
    `Authorization: ${basicAuth(source.writeKey)}\r\nContent-Length: 100000\r\n\r\n{"batch":[`
  const slow = Array.from({ length: 5 }, () => dribble(ctx.url, head, ' ', 100))

  await new Promise((resolve) => setTimeout(resolve, 300))
  const health = await fetch(`${ctx.url}/health`)
  t.equal(health.status, 200, 'a probe is answered while the slow bodies arrive')
  const sent = await fetch(`${ctx.url}/v1/batch`, {
    method: 'POST',
    headers: { authorization: basicAuth(source.writeKey), 'content-type': 'application/json' },
    body: JSON.stringify({ batch: [{ type: 'track', userId: 'u1', event: 'Signed Up' }] })
  })
  t.equal(sent.status, 200, 'and so is a batch')

  for (const answer of await Promise.all(slow)) {
    t.match(answer.text, /^HTTP\/1\.1 408 /, 'answered 408 Request Timeout (a 4xx: the client was slow)')
    t.ok(answer.closedAfterMs >= 900 && answer.closedAfterMs < 5000, `closed about HTTP_REQUEST_TIMEOUT_MS after it opened (${answer.closedAfterMs} ms)`)
  }
  const stats = await ctx.admin('GET', `/v1/sources/${source.id}/stats`)
  t.match(stats.json, { received: 1, accepted: 1, rejected: 0 }, 'the timed-out requests stored and counted nothing')
})

t.test('headers sent too slowly, or none at all, are answered 408 after HTTP_HEADERS_TIMEOUT_MS', async (t) => {
  const ctx = await buildTestApp(t, { listen: true, env: SHORT })
  const [slowHeaders, silent] = await Promise.all([
    dribble(ctx.url, 'GET /health HTTP/1.1\r\nHost: relay\r\n', 'X-Padding: 1\r\n', 100),
    dribble(ctx.url, '', '', 60_000)
  ])
  for (const answer of [slowHeaders, silent]) {
    t.match(answer.text, /^HTTP\/1\.1 408 /)
    t.ok(answer.closedAfterMs >= 400 && answer.closedAfterMs < 5000, `closed after ${answer.closedAfterMs} ms`)
  }
})

t.test('the server runs with the configured timeouts; the defaults are set, not Node\'s "none"', async (t) => {
  const defaults = await buildTestApp(t, { listen: true, env: { ROLE: 'api' } })
  t.match(defaults.app.server, { requestTimeout: 30_000, headersTimeout: 10_000, timeout: 60_000, keepAliveTimeout: 72_000 })
  const custom = await buildTestApp(t, {
    listen: true,
    redis: defaults.redis,
    env: { ROLE: 'api', HTTP_REQUEST_TIMEOUT_MS: '20000', HTTP_HEADERS_TIMEOUT_MS: '5000', HTTP_CONNECTION_TIMEOUT_MS: '25000', HTTP_KEEP_ALIVE_TIMEOUT_MS: '65000' }
  })
  t.match(custom.app.server, { requestTimeout: 20_000, headersTimeout: 5_000, timeout: 25_000, keepAliveTimeout: 65_000 })
})
