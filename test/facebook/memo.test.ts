import t from 'tap'
import { Memo, MEMO_BUDGET_BYTES, MEMO_MAX_KEY_LENGTH } from '../../src/facebook/memo.js'

t.test('keeps at most two generations of entries', async (t) => {
  const memo = new Memo<number>(2)
  memo.set('a', 1)
  memo.set('b', 2)
  t.equal(memo.size, 2)
  memo.set('c', 3) // the young generation was full: it becomes the old one
  t.equal(memo.size, 3)
  t.equal(memo.get('a'), 1, 'still found in the old generation')
  memo.set('d', 4)
  memo.set('e', 5)
  t.ok(memo.size <= 4, 'never more than 2 × capacity')
  t.equal(memo.get('b'), undefined, 'an entry not used for two turnovers is forgotten')
})

t.test('an entry found in the old generation survives the next turnover', async (t) => {
  const memo = new Memo<string>(2)
  memo.set('kept', 'x')
  memo.set('other', 'y')
  memo.set('new', 'z') // turnover: kept and other are old
  t.equal(memo.get('kept'), 'x') // moved back to the young generation
  memo.set('newer', 'w') // turnover: young (new, kept) becomes old
  t.equal(memo.get('kept'), 'x')
  t.equal(memo.get('other'), undefined)
})

t.test('clear forgets everything', async (t) => {
  const memo = new Memo<number>(10)
  memo.set('a', 1)
  memo.clear()
  t.equal(memo.size, 0)
  t.equal(memo.get('a'), undefined)
  t.equal(memo.capacity, 10)
})

t.test('bounded by bytes: thousands of 30 KB keys keep the counted bytes under the budget', async (t) => {
  // issue 14: 4,000 identifies with 30 KB emails took a worker from 164 to 410 MB
  const memo = new Memo<string>(11_000, { maxBytes: 1024 * 1024, valueBytes: 128 })
  for (let i = 0; i < 4_000; i++) memo.set(`${i}:${'x'.repeat(30 * 1024)}`, 'hash')
  t.equal(memo.size, 0, 'a key longer than MEMO_MAX_KEY_LENGTH is not remembered at all')
  t.equal(memo.bytes, 0)

  // keys just under the length bound: the byte budget turns the generations over early
  const key = (i: number) => `${String(i).padStart(6, '0')}${'y'.repeat(MEMO_MAX_KEY_LENGTH - 6)}`
  let most = 0
  for (let i = 0; i < 4_000; i++) {
    memo.set(key(i), 'hash')
    most = Math.max(most, memo.bytes)
  }
  t.ok(most <= memo.maxBytes, `at most ${most} counted bytes at any time, ≤ ${memo.maxBytes}`)
  t.ok(memo.bytes <= memo.maxBytes, `${memo.bytes} counted bytes ≤ ${memo.maxBytes}`)
  t.ok(memo.size < 4_000, `fewer entries kept (${memo.size}) than set`)
  t.equal(memo.get(key(3_999)), 'hash', 'the latest entries are kept')
  t.ok(memo.size > 500, 'and as many as fit')
})

t.test('bounded by bytes: the counted bytes follow the entries', async (t) => {
  const memo = new Memo<number>(100, { maxBytes: 10_000, valueBytes: 100 })
  memo.set('ab', 1)
  t.equal(memo.bytes, 104, '2 bytes a key character + the value estimate')
  memo.set('ab', 2)
  t.equal(memo.bytes, 104, 'a key set again is counted once')
  t.equal(memo.get('ab'), 2)
  memo.clear()
  t.equal(memo.bytes, 0)
  t.equal(memo.maxBytes, 10_000)
  const tiny = new Memo<number>(10, { maxBytes: 200, valueBytes: 128 })
  tiny.set('k', 1)
  t.equal(tiny.size, 0, 'an entry larger than a generation\'s share is not remembered')
  const whole = new Memo<number>(10)
  t.equal(whole.maxBytes, MEMO_BUDGET_BYTES, 'by default a memo may use the whole budget')
  t.equal(MEMO_BUDGET_BYTES, 32 * 1024 * 1024, '32 MiB a process')
})
