import t from 'tap'
import { Memo } from '../../src/facebook/memo.js'

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
