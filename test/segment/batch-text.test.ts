import t from 'tap'
import { batchItemSpans, minimumJsonBytes } from '../../src/segment/batch-text.js'

/** The text of each item, as the scanner found it. */
function items (text: string): string[] | undefined {
  return batchItemSpans(text)?.map(([start, end]) => text.slice(start, end))
}

t.test('finds each message of the batch as sent, whitespace and all', async (t) => {
  const a = '{"type":"track","event":"A","userId":"u1"}'
  const b = '{ "type" : "identify", "traits": { "nested": [1, {"x": "}"}] }, "userId": "u2" }'
  t.same(items(`{"batch":[${a},${b}]}`), [a, b])
  t.same(items(`{\n  "sentAt": "2024-01-01T00:00:00Z",\n  "batch": [\n    ${a} ,\n    ${b}\n  ]\n}`), [a, b], 'other keys and pretty-printing')
  t.same(items('{"context":{"batch":[{"x":1}]},"batch":[{"y":2}]}'), ['{"y":2}'], 'a nested "batch" key is not the batch')
  t.same(items('{"batch":[]}'), [])
})

t.test('strings with braces, brackets, quotes and backslashes do not confuse it', async (t) => {
  const tricky = String.raw`{"event":"a \" } ] [ { \\","p":{"q":"\\\\"},"r":"\\\"}"}`
  t.same(JSON.parse(`[${tricky}]`).length, 1, 'the sample is valid JSON')
  t.same(items(`{"batch":[${tricky},{"b":1}]}`), [tricky, '{"b":1}'])
  const unicode = '{"name":"Zoë 🎉 — ✓"}'
  t.same(items(`{"batch":[${unicode}]}`), [unicode])
})

t.test('items that are not objects are found too (the caller rejects them)', async (t) => {
  t.same(items('{"batch":[1, "two", null, true, [3], {"a":1}]}'), ['1', '"two"', 'null', 'true', '[3]', '{"a":1}'])
})

t.test('the last of repeated "batch" keys counts, as JSON.parse does', async (t) => {
  const text = '{"batch":[{"a":1},{"a":2}],"batch":[{"b":1}]}'
  t.same(JSON.parse(text).batch, [{ b: 1 }])
  t.same(items(text), ['{"b":1}'])
})

t.test('a body of another shape gives undefined: the caller measures otherwise', async (t) => {
  t.equal(batchItemSpans('{"messages":[{"a":1}]}'), undefined, 'no batch key')
  t.equal(batchItemSpans('{"\\u0062atch":[{"a":1}]}'), undefined, 'an escaped key')
  t.equal(batchItemSpans('[{"a":1}]'), undefined, 'not an object')
})

t.test('minimumJsonBytes never exceeds the bytes of the JSON text, however it is spelt', async (t) => {
  const samples: unknown[] = [
    'plain', '', 'Zoë 🎉 — ✓', 'quote " backslash \\ newline \n', 0, -12.5e300, true, false, null, [], {}, [1, [2, [3]]],
    { type: 'track', userId: 'u1', event: 'Order Completed', properties: { revenue: 39.95, products: [{ id: 'p1' }, { id: 'p2' }] } },
    { ключ: 'значение', '': { '': [] } }
  ]
  for (const sample of samples) {
    for (const text of [JSON.stringify(sample), JSON.stringify(sample, null, 2)]) {
      const bound = minimumJsonBytes(JSON.parse(text))
      t.ok(bound <= Buffer.byteLength(text), `${text.slice(0, 40)}: ${bound} <= ${Buffer.byteLength(text)}`)
    }
  }
  const message = { type: 'track', userId: 'user-1', event: 'Order Completed', properties: { order_id: 'o-1', revenue: 39.95 } }
  const bytes = Buffer.byteLength(JSON.stringify(message))
  t.ok(minimumJsonBytes(message) >= bytes * 0.9, 'and is close for plain messages: it spares the scan')
  t.equal(minimumJsonBytes({ a: { b: { c: 'deep' } } }, 1), '{"a":{}}'.length, 'nesting below the depth counts as empty')
})
