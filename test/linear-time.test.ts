// No super-linear work on input: every parser a client's text reaches runs in time linear in its
// length. Each is run on 10 KB and 100 KB of the shapes that make a backtracking pattern retry;
// the second may take at most 20× the first (linear: ~10×; the decimal pattern this replaced:
// ~100×, and 41 s for 60 events of 32,000 digits).
import t, { type Test } from 'tap'
import { evaluate } from '../src/audiences/evaluate.js'
import { parseDecimal } from '../src/decimal.js'
import { parseFacebookSettings } from '../src/facebook/settings.js'
import { transformTrack } from '../src/facebook/transform.js'
import { batchItemSpans } from '../src/segment/batch-text.js'
import { checkMessage, parseTimeMs } from '../src/segment/message.js'
import type { SegmentMessage } from '../src/segment/types.js'
import { writeKeyFromHeader } from '../src/segment/write-key.js'
import { growth, repeated } from './helpers/linear.js'

const MAX_RATIO = 20
const SHAPES: Array<[string, (bytes: number) => string]> = [
  ['digits then a letter', repeated('1', 'x')],
  ['a decimal with a long fraction and a bad exponent', (bytes) => '1.' + '1'.repeat(bytes) + 'e'],
  ['spaces around a number', (bytes) => ' '.repeat(bytes) + '1 x'],
  ['repeated "1-"', repeated('1-')],
  ['repeated "a."', repeated('a.', '!')],
  ['a date with a long tail', (bytes) => '2024-05-01T' + '1'.repeat(bytes)],
  ['repeated "-01"', repeated('-01')],
  ['escaped quotes', repeated('\\"')],
  ['backslashes', repeated('\\\\')]
]

/** `wrap` builds the function's input from the adversarial text, outside the timed calls. */
function check<T> (t: Test, name: string, fn: (input: T) => unknown, wrap: (text: string) => T = (text) => text as T): void {
  for (const [shape, make] of SHAPES) {
    const ratio = growth(fn, (bytes) => wrap(make(bytes)), MAX_RATIO)
    t.ok(ratio <= MAX_RATIO, `${name}, ${shape}: 100 KB took ${ratio.toFixed(1)}× 10 KB`)
  }
}

const settings = parseFacebookSettings({ conversionEvents: { 'Order Completed': '1', 'Product Added': '2' }, leadEvents: { Lead: '3' } })
if (!('settings' in settings)) throw new Error(settings.error)
const now = Date.parse('2024-05-01T12:00:00.000Z')
const trackWith = (properties: Record<string, unknown>, extra: Record<string, unknown> = {}): SegmentMessage => ({
  type: 'track', event: 'Order Completed', messageId: 'm-1', userId: 'u1', timestamp: '2024-05-01T11:00:00.000Z', originalTimestamp: '2024-05-01T11:00:00.000Z', receivedAt: '2024-05-01T12:00:00.000Z', properties, ...extra
})

t.test('decimals (values, revenue, trait comparisons)', async (t) => {
  check(t, 'parseDecimal', parseDecimal)
})

t.test('client times', async (t) => {
  check(t, 'parseTimeMs', parseTimeMs)
})

t.test('a message\'s checks', async (t) => {
  check(t, 'checkMessage, a long userId', (text) => checkMessage({ type: 'identify', userId: text }))
  check(t, 'checkMessage, a long timestamp', (text) => checkMessage({ type: 'identify', userId: 'u1', timestamp: text, sentAt: text }))
  check(t, 'checkMessage, a long event name', (text) => checkMessage({ type: 'track', userId: 'u1', event: text, properties: { text } }))
})

t.test('the transform\'s value, currency, ids and LDU readers', async (t) => {
  const run = (message: SegmentMessage) => transformTrack(message, settings.settings, { now })
  check(t, 'revenue', (text) => run(trackWith({ revenue: text })))
  check(t, 'total', (text) => run(trackWith({ total: text })))
  check(t, 'currency', (text) => run(trackWith({ revenue: 1, currency: text })))
  check(t, 'product ids', (text) => run(trackWith({ revenue: 1, product_id: text, order_id: text })))
  check(t, 'lead id', (text) => run(trackWith({ revenue: 1 }, { context: { 'Facebook Offline Conversions': { leadId: text } } })))
  check(t, 'event name', (text) => run(trackWith({ revenue: 1 }, { event: text })))
})

t.test('audience conditions on a numeric string trait', async (t) => {
  const condition = { type: 'trait', trait: 'score', op: 'gt', value: 5 } as const
  check(t, 'evaluate', (text) => evaluate(condition, { now, counts: () => new Map(), trait: () => text }))
})

t.test('the batch text scanner and the write key header', async (t) => {
  check(t, 'batchItemSpans', batchItemSpans, (text) => JSON.stringify({ batch: [{ a: text }, text, { b: [text] }] }))
  check(t, 'writeKeyFromHeader', writeKeyFromHeader, (text) => `Basic ${Buffer.from(text).toString('base64')}`)
})
