import { Writable } from 'node:stream'
import pino from 'pino'
import t from 'tap'
import { LOG_REDACT } from '../src/app.js'
import { lazyRequestLogger } from '../src/request-logger.js'

/** A Pino logger at `level` whose lines the test reads, and the request logger it makes. */
function setup (level: string) {
  const lines: Array<Record<string, unknown>> = []
  const stream = new Writable({ write (chunk, _encoding, done) { lines.push(JSON.parse(String(chunk))); done() } })
  const parent = pino({ level, redact: LOG_REDACT }, stream)
  const factory = lazyRequestLogger('warn') as unknown as (logger: unknown, bindings: Record<string, unknown>) => pino.Logger
  return { lines, parent, log: factory(parent, { reqId: 'req-7' }) }
}

t.test('lines below the route\'s level are dropped, the others carry the request id', async (t) => {
  const { lines, log } = setup('info')
  log.info({ req: { url: '/v1/track' } }, 'incoming request')
  log.debug('details')
  t.same(lines, [], 'info and debug are below warn')
  log.warn({ source: { writeKey: 'wk-secret' } }, 'slow')
  log.error({ err: new Error('boom') }, 'ingestion failed')
  t.same(lines.map((l) => [l.level, l.msg, l.reqId]), [[40, 'slow', 'req-7'], [50, 'ingestion failed', 'req-7']])
  t.same(lines[0].source, { writeKey: '[Redacted]' }, 'the server\'s redaction applies')
  t.match(lines[1].err, { message: 'boom' }, 'errors are serialised as usual')
})

t.test('a server level above the route\'s wins', async (t) => {
  const { lines, log } = setup('error')
  log.warn('slow')
  t.same(lines, [], 'warn is below the server\'s error')
  log.fatal('down')
  t.same(lines.map((l) => [l.level, l.msg, l.reqId]), [[60, 'down', 'req-7']])
  t.equal(log.level, 'error')
})

t.test('a silent server writes nothing', async (t) => {
  const { lines, log } = setup('silent')
  log.fatal('down')
  t.same(lines, [])
})

t.test('a child of the request logger keeps its bindings', async (t) => {
  const { lines, log } = setup('info')
  log.child({ sourceId: 's1' }).warn('over the backlog')
  t.same(lines.map((l) => [l.msg, l.reqId, l.sourceId]), [['over the backlog', 'req-7', 's1']])
})
