// Issue 14, "linear time on hostile input": every normaliser and parser of match-keys.ts runs in
// time linear in its input. Each is run on 10 KB and 100 KB adversarial inputs; the 100 KB run
// may take at most 20× the 10 KB one (linear is 10×; a quadratic step would be 100×): a ratio of
// medians (test/helpers/linear.ts), not a wall-clock bound.
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
import { growthRatio } from '../helpers/linear.js'

const SMALL = 10 * 1024
const LARGE = 100 * 1024
const MAX_RATIO = 20

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
      const measured = growthRatio(fn, small, large, MAX_RATIO)
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
  // a quadratic de-duplication measures ~80× here
  const measured = growthRatio(fn, emails(3 * 1024), large, MAX_RATIO)
  t.ok(measured <= MAX_RATIO, `30 KB took ${measured.toFixed(1)}× the time of 3 KB (at most ${MAX_RATIO}×)`)
  clearMatchKeyCache()
})
