// Issue 14, "linear time on hostile input": every normaliser and parser of match-keys.ts runs in
// time linear in its input. Each is run on 10 KB and 100 KB adversarial inputs; the 100 KB run
// may take at most 20× the 10 KB one (linear is 10×; a quadratic step would be 100×). A ratio of
// medians of nine short runs, not a wall-clock bound, so a slow or busy machine does not fail it
// (on this shared machine single runs of the same work vary 50-fold).
import t from 'tap'
import {
  clearMatchKeyCache,
  hashedTraitKeys,
  normalizeBirthday,
  normalizeCity,
  normalizeCountry,
  normalizeEmail,
  normalizeGender,
  normalizeName,
  normalizePhone,
  normalizeState,
  normalizeZip
} from '../../src/facebook/match-keys.js'
import { matchKeyTraitOf } from '../../src/facebook/trait-spellings.js'

const SMALL = 10 * 1024
const LARGE = 100 * 1024
const MAX_RATIO = 20
const REPETITIONS = 9
// each timed batch of the small input lasts at least this long, so the timer's resolution and
// a stray pause do not decide the ratio
const MIN_BATCH_NS = 300_000n

/** Adversarial inputs of `size` characters: what makes backtracking or re-scanning slow. */
function inputs (size: number): Array<[string, string]> {
  const repeat = (unit: string, tail = '') => unit.repeat(Math.floor((size - tail.length) / unit.length)) + tail
  return [
    ['digits', repeat('1')],
    ['1-', repeat('1-')],
    ['spaces, then a letter', repeat(' ', 'a')],
    ['a letter between spaces', `${' '.repeat(size / 2)}a${' '.repeat(size / 2 - 1)}`],
    ['a.', repeat('a.')],
    ['letters ending in an invalid character', repeat('a', '!')],
    ['a@', repeat('a@')],
    ['an email with a long local part', repeat('a', '@example.com')],
    ['+1 ', repeat('+1 ')],
    ['digits then x', repeat('1', 'x')],
    ['month names', repeat('Feb ')],
    ['date-like', repeat('1997-02-16 ')],
    ['punctuation only', repeat('-')],
    ['N/A', repeat('N/A ')],
    ['combining marks', repeat('e\u0301')],
    ['ʻokina', repeat('ʻi')]
  ]
}

function timeBatch<T> (fn: (input: T) => unknown, input: T, count: number): bigint {
  const started = process.hrtime.bigint()
  for (let i = 0; i < count; i++) fn(input)
  return process.hrtime.bigint() - started
}

function minimum (values: bigint[]): bigint {
  return values.reduce((a, b) => (a < b ? a : b))
}

function median (values: bigint[]): bigint {
  const sorted = [...values].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
  return sorted[Math.floor(sorted.length / 2)]
}

/**
 * Median time of the large input over the small one, with the same number of calls (`pick`:
 * another statistic of the repetitions).
 */
function ratio<T> (fn: (input: T) => unknown, small: T, large: T, pick = median, repetitions = REPETITIONS): number {
  let count = 1
  fn(small) // warm up (and fill any one-time index)
  fn(large)
  while (timeBatch(fn, small, count) < MIN_BATCH_NS && count < 1_000_000) count *= 2
  // one untimed batch of each first: the compiler has seen both sizes before the clock starts
  timeBatch(fn, small, count)
  timeBatch(fn, large, count)
  const smallTimes: bigint[] = []
  const largeTimes: bigint[] = []
  for (let i = 0; i < repetitions; i++) {
    smallTimes.push(timeBatch(fn, small, count))
    largeTimes.push(timeBatch(fn, large, count))
  }
  return Number(pick(largeTimes)) / Number(pick(smallTimes))
}

const PARSERS: Array<[string, (input: string) => unknown]> = [
  ['normalizeEmail', normalizeEmail],
  ['normalizeName', normalizeName],
  ['normalizeCity', normalizeCity],
  ['normalizeGender', normalizeGender],
  ['normalizeCountry', normalizeCountry],
  ['normalizeState', (input) => normalizeState(input)],
  ['normalizeState, the country hostile', (input) => normalizeState('CA', input)],
  ['normalizeZip', (input) => normalizeZip(input, 'US')],
  ['normalizeZip, the country hostile', (input) => normalizeZip('02818', input)],
  ['normalizePhone', (input) => normalizePhone(input, 'US')],
  ['normalizePhone, no country', (input) => normalizePhone(input)],
  ['normalizePhone, the country hostile', (input) => normalizePhone('4011234567', input)],
  ['normalizeBirthday', normalizeBirthday],
  ['matchKeyTraitOf (a trait name)', matchKeyTraitOf],
  ['hashedTraitKeys, every trait', (input) => hashedTraitKeys({
    email: input,
    phone: input,
    firstName: input,
    lastName: input,
    gender: input,
    birthday: input,
    address: { city: input, state: input, postalCode: input, country: input }
  })],
  ['hashedTraitKeys, the full name split', (input) => hashedTraitKeys({ name: input })],
  ['hashedTraitKeys, spellings and lists', (input) => hashedTraitKeys({ mobile: [input, input], zip: input, dob: input, country_code: input })],
  ['hashedTraitKeys, a hostile trait name', (input) => hashedTraitKeys({ [input]: 'a@b.co' })]
]

const smallInputs = inputs(SMALL)
const largeInputs = inputs(LARGE)

for (const [name, fn] of PARSERS) {
  t.test(`linear time on hostile input: ${name}`, async (t) => {
    clearMatchKeyCache()
    smallInputs.forEach(([label, small], i) => {
      const large = largeInputs[i][1]
      t.ok(large.length >= LARGE - 16 && small.length >= SMALL - 16, `${label}: input sizes`)
      const measured = ratio(fn, small, large)
      t.ok(measured <= MAX_RATIO, `${label}: 100 KB took ${measured.toFixed(1)}× the time of 10 KB (at most ${MAX_RATIO}×)`)
    })
  })
}

t.test('linear time on hostile input: a list of many distinct emails is de-duplicated in linear time', async (t) => {
  clearMatchKeyCache()
  // lists as long as a message allows (32 KB) and a tenth of that, of distinct short emails.
  // `includes` on every value was quadratic
  const emails = (size: number) => Array.from({ length: Math.floor(size / 12) }, (_, i) => `${i.toString(36)}@ex.co`)
  const fn = (list: string[]) => hashedTraitKeys({ email: list })
  const large = emails(30 * 1024)
  t.equal(fn(large).em?.length, large.length, 'every distinct email is sent once')
  // the fastest of several runs: thousands of remembered hashes do not all stay in the CPU's
  // cache, and on a busy machine the longer runs are interrupted more often; neither is the
  // algorithm's doing (a quadratic de-duplication measures ~80× here)
  const measured = ratio(fn, emails(3 * 1024), large, minimum, 9)
  t.ok(measured <= MAX_RATIO, `30 KB took ${measured.toFixed(1)}× the time of 3 KB (at most ${MAX_RATIO}×)`)
  clearMatchKeyCache()
})
