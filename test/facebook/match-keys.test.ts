import { createHash } from 'node:crypto'
import { parsePhoneNumberFromString, type CountryCode } from 'libphonenumber-js'
import t from 'tap'
import {
  clearMatchKeyCache,
  hashedExternalId,
  hashedTraitKeys,
  hasNoMatchKey,
  isSha256Hex,
  isTooWeak,
  matchKeyMemoBytes,
  mergeMatchKeys,
  normalizeBirthday,
  normalizeCity,
  normalizeCountry,
  normalizeEmail,
  normalizeGender,
  normalizeName,
  normalizePhone,
  normalizeState,
  normalizeZip,
  sha256Hex,
  type MatchKeys
} from '../../src/facebook/match-keys.js'
import { MEMO_BUDGET_BYTES } from '../../src/facebook/memo.js'

/** The expected hash, computed independently of the code under test. */
function sha (value: string): string {
  return createHash('sha256').update(value, 'utf8').digest('hex')
}

t.test('Meta\'s reference values (spec/facebook.md), pinned literally', async (t) => {
  t.equal(normalizeEmail('John_Smith@gmail.com'), 'john_smith@gmail.com')
  t.equal(sha256Hex(normalizeEmail('John_Smith@gmail.com')!), '62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f')
  t.equal(normalizePhone('(650)555-1212', 'US'), '16505551212')
  t.equal(sha256Hex(normalizePhone('(650)555-1212', 'US')!), 'e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176')
  t.equal(sha256Hex(normalizeGender('m')!), '62c66a7a5dd70c3146618063c344e531e6d4b59e379808443ce962b3abd63c5a')
  t.equal(normalizeCity('New York'), 'newyork')
  t.equal(sha256Hex(normalizeCity('New York')!), '350c754ba4d38897693aa077ef43072a859d23f613443133fecbbd90a3512ca5')
  t.equal(normalizeCountry('United States'), 'us')
  t.equal(sha256Hex(normalizeCountry('United States')!), '79adb2a2fce5c6ba215fe5f27f532d4e7edbac4b6a5e09e1ef3a08084a904621')
  // reference/meta-graph-api-notes.md §2
  t.equal(sha256Hex(normalizeGender('F')!), '252f10c83610ebca1a059c0bae8255eba2f95be4d1d7bcfa89d7248a82d9f111')
  t.equal(sha256Hex(normalizeName('Valéry')!), '08e1996b5dd49e62a4b4c010d44e4345592a863bb9f8e3976219bac29417149c')
  t.equal(sha256Hex(normalizeName('정')!), '8fa8cd9c440be61d0151429310034083132b35975c4bea67fdd74158eb51db14')
  t.equal(sha256Hex(normalizeBirthday('2/16/1997')!), '01acdbf6ec7b4f478a225f1a246e5d6767eeab1a7ffa17f025265b5b94f40f0c')
  t.equal(sha256Hex(normalizeState('California')!), '6959097001d10501ac7d54c0bdb8db61420f658f2922cc26e46d536119a31126')
  t.equal(sha256Hex(normalizeZip('94035', 'US')!), '1794327a4d443904421f5ca1f3d72d0a62ba2f0770d80755ec2220fc0efb052e')
})

t.test('the reference traits, hashed together', async (t) => {
  const keys = hashedTraitKeys({
    email: 'John_Smith@gmail.com',
    phone: '(650)555-1212',
    gender: 'm',
    address: { city: 'New York', country: 'United States' }
  })
  t.same(keys, {
    em: ['62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f'],
    ph: ['e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176'],
    ge: '62c66a7a5dd70c3146618063c344e531e6d4b59e379808443ce962b3abd63c5a',
    ct: '350c754ba4d38897693aa077ef43072a859d23f613443133fecbbd90a3512ca5',
    country: '79adb2a2fce5c6ba215fe5f27f532d4e7edbac4b6a5e09e1ef3a08084a904621'
  })
})

t.test('the seed\'s hamsolo813 traits', async (t) => {
  const traits = {
    email: 'hamsolo813@hamsolo813.com',
    phone: '4011234567',
    gender: 'm',
    name: 'ham solo',
    address: { city: 'East Greenwich', state: 'RI', postalCode: '02818', country: 'USA' }
  }
  // the seed's 401-123-4567 is "not valid" for libphonenumber; its parsed form is kept
  t.equal(normalizePhone('4011234567', 'USA'), '14011234567')
  const expected = {
    em: [sha('hamsolo813@hamsolo813.com')],
    ph: [sha('14011234567')],
    ge: sha('m'),
    fn: sha('ham'),
    ln: sha('solo'),
    ct: sha('eastgreenwich'),
    st: sha('ri'),
    zp: sha('02818'),
    country: sha('us')
  }
  t.same(hashedTraitKeys(traits), expected)
  t.equal(expected.ph[0], '89fe36dd70ef72f0249e4772cf73606c2aafa70f0cb4f73df3265bffc1c0a5ac', 'sha256("14011234567")')
  t.equal(expected.country, '79adb2a2fce5c6ba215fe5f27f532d4e7edbac4b6a5e09e1ef3a08084a904621')
  clearMatchKeyCache()
  t.same(hashedTraitKeys(traits), expected, 'the same from a cold cache')
  t.same(hashedTraitKeys(traits), expected, 'and from a warm one')
})

t.test('sha256Hex: lower-case hex of the NFC form; hashes pass through', async (t) => {
  t.equal(sha256Hex('abc'), sha('abc'))
  t.equal(sha256Hex('vale\u0301ry'), sha('val\u00e9ry'), 'decomposed é hashes as precomposed')
  const upper = sha('x').toUpperCase()
  t.equal(sha256Hex(upper), sha('x'), 'a 64-hex value is passed through, lower-cased')
  t.ok(isSha256Hex(sha('x')))
  t.notOk(isSha256Hex('g'.repeat(64)))
  t.notOk(isSha256Hex('a'.repeat(63)))
})

t.test('normalizeEmail: trim, lower-case', async (t) => {
  t.equal(normalizeEmail('a@b.c'), 'a@b.c')
  t.equal(normalizeEmail('  Mary@Example.COM '), 'mary@example.com')
  t.equal(normalizeEmail(''), undefined)
  t.equal(normalizeEmail('   '), undefined)
  t.equal(normalizeEmail(undefined), undefined)
  t.equal(normalizeEmail({}), undefined)
})

t.test('normalizePhone: E.164 digits without +, address country as default region', async (t) => {
  t.equal(normalizePhone('4011234567', 'US'), '14011234567')
  t.equal(normalizePhone('4011234567', 'us'), '14011234567', 'any case')
  t.equal(normalizePhone('4011234567', 'United States'), '14011234567', 'a country name works too')
  t.equal(normalizePhone(4011234567, 'US'), '14011234567', 'a number')
  t.equal(normalizePhone('+1 (401) 123-4567'), '14011234567', 'international form needs no region')
  t.equal(normalizePhone('1-401-123-4567', 'US'), '14011234567', 'the national prefix is not doubled')
  t.equal(normalizePhone('020 7946 0958', 'GB'), '442079460958')
  t.equal(normalizePhone('06 12 34 56 78', 'FR'), '33612345678')
  t.equal(normalizePhone('+44 20 7946 0958', 'US'), '442079460958', 'an explicit country code beats the region')
  t.equal(normalizePhone('15559876543'), '15559876543', 'no region, no +: digits as sent')
  t.equal(normalizePhone('4011234567'), '4011234567', 'no region: digits only')
  t.equal(normalizePhone('00 44 20 7946 0958'), '442079460958', 'unparsed: leading zeros removed')
  t.equal(normalizePhone('123', 'US'), undefined, 'not a possible number for its country: not sent')
  t.equal(normalizePhone('4011234567', 'Narnia'), '4011234567', 'unknown region: digits only')
  t.equal(normalizePhone('4011234567', 'AQ'), '4011234567', 'a country without phone metadata: digits only')
  t.equal(normalizePhone('call me'), undefined)
  t.equal(normalizePhone('000'), undefined)
  t.equal(normalizePhone(''), undefined)
  t.equal(normalizePhone(null), undefined)
})

t.test('normalizeGender: m/male, f/female in any case; nothing else', async (t) => {
  for (const value of ['m', 'M', 'male', 'Male', ' MALE ']) t.equal(normalizeGender(value), 'm', value)
  for (const value of ['f', 'F', 'female', 'Female']) t.equal(normalizeGender(value), 'f', value)
  for (const value of ['x', 'other', 'mr', '', undefined, 1]) t.equal(normalizeGender(value), undefined, String(value))
})

t.test('normalizeName: lower-case, letters and digits of any script', async (t) => {
  t.equal(normalizeName('Mary'), 'mary')
  t.equal(normalizeName("O'Brien-Smith"), 'obriensmith')
  t.equal(normalizeName('Jean Paul'), 'jeanpaul')
  t.equal(normalizeName('Valéry'), 'valéry', 'accents stay')
  t.equal(normalizeName('Vale\u0301ry'), 'val\u00e9ry', 'composed to NFC')
  t.equal(normalizeName('정'), '정')
  t.equal(normalizeName('Мария!'), 'мария')
  t.equal(normalizeName('...'), undefined)
  t.equal(normalizeName(42), '42')
})

t.test('normalizeCity: lower-case, no punctuation, no spaces', async (t) => {
  t.equal(normalizeCity('East Greenwich'), 'eastgreenwich')
  t.equal(normalizeCity('St. Louis'), 'stlouis')
  t.equal(normalizeCity('São Paulo'), 'sãopaulo')
  t.equal(normalizeCity(' '), undefined)
})

t.test('normalizeState: US names → 2-letter codes when the country is the US or absent', async (t) => {
  t.equal(normalizeState('RI'), 'ri')
  t.equal(normalizeState('California'), 'ca')
  t.equal(normalizeState('new york', 'US'), 'ny')
  t.equal(normalizeState('District of Columbia', 'USA'), 'dc')
  t.equal(normalizeState('Puerto Rico', 'us'), 'pr')
  t.equal(normalizeState('West Virginia', 'United States'), 'wv')
  t.equal(normalizeState('Bavaria', 'DE'), 'bavaria', 'other countries: lower-case, no spaces')
  t.equal(normalizeState('Georgia', 'GE'), 'georgia', 'not the US: no translation')
  t.equal(normalizeState('Georgia', 'Narnia'), 'georgia', 'an unrecognised country is not the US')
  t.equal(normalizeState('Île-de-France', 'FR'), 'îledefrance')
  t.equal(normalizeState('-'), undefined)
})

t.test('normalizeZip: lower-case, no spaces, no dash part; US: 5 digits', async (t) => {
  t.equal(normalizeZip('02818', 'US'), '02818')
  t.equal(normalizeZip('02818-1234', 'US'), '02818')
  t.equal(normalizeZip('028181234', 'US'), '02818', 'ZIP+4 without its dash')
  t.equal(normalizeZip(2818, 'US'), '02818', 'a number lost its leading zero')
  t.equal(normalizeZip('94035', 'United States'), '94035')
  t.equal(normalizeZip('M1 1AE', 'GB'), 'm11ae')
  t.equal(normalizeZip('75008', 'FR'), '75008')
  t.equal(normalizeZip('1234-567', 'PT'), '1234', 'the dash part goes everywhere')
  t.equal(normalizeZip('028181234'), '028181234', 'no country: only the general rule')
  t.equal(normalizeZip('-123', 'US'), undefined)
  t.equal(normalizeZip(true), undefined)
})

t.test('normalizeCountry: ISO 3166-1 alpha-2, lower-case', async (t) => {
  const cases: Array<[unknown, string | undefined]> = [
    ['USA', 'us'], ['United States', 'us'], ['us', 'us'], ['US', 'us'], ['U.S.A.', 'us'], ['U.S.', 'us'],
    ['united states of america', 'us'], ['GB', 'gb'], ['UK', 'gb'], ['United Kingdom', 'gb'],
    ['GBR', 'gb'], ['deu', 'de'], ['Germany', 'de'], ['Deutschland', 'de'], ['Royaume-Uni', 'gb'],
    ['Côte d\'Ivoire', 'ci'], ['South Korea', 'kr'], ['Narnia', undefined], ['XX', undefined],
    ['', undefined], [undefined, undefined], [840, undefined]
  ]
  for (const [value, expected] of cases) t.equal(normalizeCountry(value), expected, String(value))
})

t.test('normalizeBirthday: YYYYMMDD', async (t) => {
  const cases: Array<[unknown, string | undefined]> = [
    ['2/16/1997', '19970216'], ['1997-02-16', '19970216'], ['1990-12-05', '19901205'], ['1990-10-25', '19901025'], ['19970216', '19970216'], [19970216, '19970216'],
    ['1997-02-16T00:00:00.000Z', '19970216'], ['1997-02-16T23:30:00-05:00', '19970216'],
    ['1997/2/16', '19970216'], ['16.2.1997', '19970216'], [new Date(Date.UTC(1997, 1, 16)), '19970216'],
    ['1997-02-30', undefined], ['19971316', undefined], ['1850-01-01', undefined], ['2999-01-01', undefined],
    ['yesterday', undefined], ['', undefined], [new Date(Number.NaN), undefined], [{}, undefined]
  ]
  for (const [value, expected] of cases) t.equal(normalizeBirthday(value), expected, String(value))
})

t.test('hashedTraitKeys: every key of the match-key table', async (t) => {
  const keys = hashedTraitKeys({
    email: ['A@x.com', 'b@x.com', 'a@X.com ', '', 7, 'n/a'],
    phone: ['(650)555-1212', '650 555 1212', 'nope'],
    gender: 'Female',
    firstName: 'Mary',
    lastName: 'Smith-Jones',
    name: 'Ignored Name',
    birthday: '1997-02-16',
    address: { city: 'San Francisco', state: 'California', postalCode: '94107-1234', country: 'US' }
  })
  t.same(keys, {
    em: [sha('a@x.com'), sha('b@x.com')],
    ph: [sha('16505551212')],
    ge: sha('f'),
    fn: sha('mary'),
    ln: sha('smithjones'),
    ct: sha('sanfrancisco'),
    st: sha('ca'),
    zp: sha('94107'),
    country: sha('us'),
    db: sha('19970216'),
    doby: sha('1997'),
    dobm: sha('02'),
    dobd: sha('16')
  }, 'arrays de-duplicated, junk left out')
  t.notOk('external_id' in keys, 'never a user id: profiles keep these keys')
})

t.test('hashedTraitKeys: name gives fn (first word) and ln (last word)', async (t) => {
  t.same(hashedTraitKeys({ name: 'Ham  Solo' }), { fn: sha('ham'), ln: sha('solo') })
  t.same(hashedTraitKeys({ name: 'Mary Ann van Dyke' }), { fn: sha('mary'), ln: sha('dyke') })
  t.same(hashedTraitKeys({ name: 'Cher' }), { fn: sha('cher') }, 'one word gives fn only')
  t.same(hashedTraitKeys({ firstName: 'Mary', name: 'Ham Solo' }), { fn: sha('mary'), ln: sha('solo') })
  t.same(hashedTraitKeys({ lastName: 'Jones', name: 'Ham Solo' }), { fn: sha('ham'), ln: sha('jones') })
  t.same(hashedTraitKeys({ name: '' }), {})
  t.same(hashedTraitKeys({ name: 5 }), {})
})

t.test('hashedTraitKeys: the address country drives phone, state and zip', async (t) => {
  t.same(hashedTraitKeys({ phone: '020 7946 0958', address: { country: 'United Kingdom', postalCode: 'M1 1AE', state: 'Greater Manchester' } }), {
    ph: [sha('442079460958')],
    st: sha('greatermanchester'),
    zp: sha('m11ae'),
    country: sha('gb')
  })
  t.same(hashedTraitKeys({ address: { state: 'Texas' } }), { st: sha('tx') }, 'no country: US state names')
  t.same(hashedTraitKeys({ address: { state: 'Texas', country: 'Narnia' } }), { st: sha('texas') }, 'an unknown country is left out')
  t.same(hashedTraitKeys({ phone: 4011234567, address: { postalCode: 2818, country: 'USA' } }), {
    ph: [sha('14011234567')],
    zp: sha('02818'),
    country: sha('us')
  }, 'numbers are read as text')
  t.same(hashedTraitKeys({ phone: '4011234567', address: { country: 'USA' } }).ph,
    hashedTraitKeys({ phone: '4011234567', address: { country: 'US' } }).ph)
  t.same(hashedTraitKeys({ phone: '4011234567' }).ph, [sha('4011234567')], 'the same phone without a country: digits only')
})

t.test('hashedTraitKeys: values already hashed pass through, lower-cased', async (t) => {
  const hashed = sha('someone@example.com')
  const keys = hashedTraitKeys({
    email: hashed.toUpperCase(),
    phone: ` ${sha('16505551212')} `,
    gender: sha('m'),
    firstName: sha('mary'),
    birthday: sha('19970216'),
    address: { country: sha('us'), state: sha('ca'), postalCode: sha('94107'), city: sha('paris') }
  })
  t.same(keys, {
    em: [hashed],
    ph: [sha('16505551212')],
    ge: sha('m'),
    fn: sha('mary'),
    ct: sha('paris'),
    st: sha('ca'),
    zp: sha('94107'),
    country: sha('us'),
    db: sha('19970216')
  }, 'a hashed birthday has no legacy year/month/day parts')
})

t.test('hashedTraitKeys: no traits, or traits of the wrong shape', async (t) => {
  t.same(hashedTraitKeys(undefined), {})
  t.same(hashedTraitKeys({}), {})
  t.same(hashedTraitKeys({ email: null, phone: {}, gender: 'x', address: 'Main St', birthday: null }), {})
  t.same(hashedTraitKeys({ email: [], phone: [null] }), {})
  t.same(hashedTraitKeys({ firstName: ['Mary'], gender: ['f'], address: { city: ['Paris'] } }), {}, 'lists only for email and phone')
  t.same(hashedTraitKeys({ birthday: new Date(Date.UTC(1990, 6, 7)) }), {
    db: sha('19900707'), doby: sha('1990'), dobm: sha('07'), dobd: sha('07')
  })
  t.same(hashedTraitKeys({ birthday: 'soon' }), {})
  t.same(hashedTraitKeys({ birthday: true }), {})
})

t.test('hashedTraitKeys: a trait value means the same as first name and as city', async (t) => {
  // the memo is shared by names and cities: both normalise the same way
  t.same(hashedTraitKeys({ firstName: 'Paris', address: { city: 'Paris' } }), { fn: sha('paris'), ct: sha('paris') })
  // …but not by gender: `Male` as a name is `male`, as a gender `m`
  t.same(hashedTraitKeys({ gender: 'Male', firstName: 'Male' }), { ge: sha('m'), fn: sha('male') })
})

t.test('hashedExternalId: SHA-256 of the id as given (case kept)', async (t) => {
  t.equal(hashedExternalId('User-1'), sha('User-1'))
  t.equal(hashedExternalId('User-1'), sha('User-1'), 'remembered')
  t.not(hashedExternalId('user-1'), sha('User-1'))
})

t.test('mergeMatchKeys: message values win, the profile fills the gaps', async (t) => {
  const message: MatchKeys = { em: ['e1'], ct: 'c1', db: 'd1', external_id: 'u1' }
  const profile: MatchKeys = { em: ['e2'], ph: ['p2'], ct: 'c2', st: 's2', db: 'd2', doby: 'y2', dobm: 'm2', dobd: 'x2', ge: 'g2' }
  t.same(mergeMatchKeys(message, profile), { em: ['e1'], ph: ['p2'], ge: 'g2', ct: 'c1', st: 's2', external_id: 'u1', db: 'd1' },
    'the birthday and its parts come from one side only')
  t.same(mergeMatchKeys({ ct: 'c1' }, profile), {
    em: ['e2'], ph: ['p2'], ge: 'g2', ct: 'c1', st: 's2', db: 'd2', doby: 'y2', dobm: 'm2', dobd: 'x2'
  })
  t.same(mergeMatchKeys({ doby: 'y1' }, profile), { em: ['e2'], ph: ['p2'], ge: 'g2', ct: 'c2', st: 's2', db: 'd2', doby: 'y2', dobm: 'm2', dobd: 'x2' },
    'a whole date from the profile replaces a year alone')
  t.same(mergeMatchKeys({ doby: 'y1' }, { db: 'd2' }), { db: 'd2', doby: 'y1' }, 'a profile date without parts leaves the year for the legacy format')
  t.same(mergeMatchKeys({ em: [] }, { em: ['e2'] }), { em: ['e2'] }, 'an empty list is no value')
  t.same(mergeMatchKeys({ em: [], ph: [] }, {}), {})
  t.equal(mergeMatchKeys(message), message, 'no profile: the message keys')
  t.same(profile, { em: ['e2'], ph: ['p2'], ct: 'c2', st: 's2', db: 'd2', doby: 'y2', dobm: 'm2', dobd: 'x2', ge: 'g2' }, 'profile untouched')
})

t.test('hasNoMatchKey', async (t) => {
  t.ok(hasNoMatchKey({}))
  t.ok(hasNoMatchKey({ em: [], ph: [] }))
  t.notOk(hasNoMatchKey({ em: ['x'] }))
  t.notOk(hasNoMatchKey({ ph: ['x'] }))
  t.notOk(hasNoMatchKey({ db: 'x' }))
  t.notOk(hasNoMatchKey({ lead_id: '1' }))
  t.notOk(hasNoMatchKey({ external_id: 'u' }))
})

t.test('isTooWeak: Meta v13+ weak combinations and their subsets', async (t) => {
  const weak: MatchKeys[] = [
    {},
    { ct: 'x', country: 'x', st: 'x', zp: 'x', ge: 'x' },
    { ge: 'x', ct: 'x', st: 'x', country: 'x' },
    { country: 'x' },
    { zp: 'x' },
    { db: 'x', doby: 'x', dobm: 'x', dobd: 'x' },
    { fn: 'x', ge: 'x' },
    { ln: 'x', ge: 'x' },
    { fn: 'x' },
    { ge: 'x' }
  ]
  for (const keys of weak) t.ok(isTooWeak(keys), `weak: ${Object.keys(keys).join('+') || 'nothing'}`)
  const strong: MatchKeys[] = [
    { em: ['x'] },
    { ph: ['x'] },
    { external_id: 'u', ge: 'x' },
    { lead_id: '1', db: 'x' },
    { fn: 'x', ln: 'x' },
    { fn: 'x', ct: 'x' },
    { db: 'x', zp: 'x' },
    { ct: 'x', country: 'x', st: 'x', zp: 'x', ge: 'x', fn: 'x' }
  ]
  for (const keys of strong) t.notOk(isTooWeak(keys), `strong: ${Object.keys(keys).join('+')}`)
})

t.test('North American numbers: the fast path answers what libphonenumber answers', async (t) => {
  // the oracle: the spec's rule, straight from the library
  const oracle = (text: string, region?: CountryCode): string | undefined => {
    const parsed = parsePhoneNumberFromString(text, region)
    if (parsed !== undefined) return parsed.isPossible() ? parsed.number.slice(1) : undefined
    if (region !== undefined || text.startsWith('+')) return undefined
    const digits = text.replace(/\D+/g, '').replace(/^0+/, '')
    return digits.length >= 7 && digits.length <= 15 ? digits : undefined
  }
  const formats: Array<(a: string, b: string, c: string) => string> = [
    (a, b, c) => `${a}${b}${c}`,
    (a, b, c) => `(${a}) ${b}-${c}`,
    (a, b, c) => `(${a})${b}-${c}`,
    (a, b, c) => `${a}-${b}-${c}`,
    (a, b, c) => `${a}.${b}.${c}`,
    (a, b, c) => `${a} ${b} ${c}`,
    (a, b, c) => `1${a}${b}${c}`,
    (a, b, c) => `1-${a}-${b}-${c}`,
    (a, b, c) => `1 (${a}) ${b}-${c}`,
    (a, b, c) => `+1${a}${b}${c}`,
    (a, b, c) => `+1 ${a} ${b} ${c}`,
    (a, b, c) => `+1 (${a}) ${b}-${c}`,
    (a, b, c) => `+1-${a}-${b}-${c}`
  ]
  const regions: Array<CountryCode | undefined> = ['US', 'CA', undefined, 'GB', 'PR']
  let state = 42
  const digit = () => {
    state = (state * 1103515245 + 12345) % 2147483648
    return state % 10
  }
  const mismatches: string[] = []
  let checked = 0
  for (let i = 0; i < 4000; i++) {
    const a = `${2 + (digit() % 8)}${digit()}${digit()}`
    const b = `${digit()}${digit()}${digit()}`
    const c = `${digit()}${digit()}${digit()}${digit()}`
    const text = formats[i % formats.length](a, b, c)
    const region = regions[Math.floor(i / formats.length) % regions.length]
    checked++
    if (normalizePhone(text, region) !== oracle(text, region)) mismatches.push(`${text} (${region ?? 'no region'})`)
  }
  t.same(mismatches, [], `${checked} numbers, none different`)
})

/* Issue 15: match keys Meta can use — send nothing rather than junk ------------------------- */

const THIS_YEAR = new Date().getUTCFullYear()

t.test('rule 1, placeholders are not values: no key from N/A, none, null, unknown, -, ?', async (t) => {
  const placeholders = [
    'N/A', 'n/a', 'n.a.', 'N.A.', 'N / A', 'n-a', '#N/A', 'none', 'NONE', '(none)', 'null', 'NULL', '<null>', 'nil',
    'undefined', 'unknown', 'Unknown', '-unknown-', 'not applicable', '-', '--', '?', '???', '...', '—', '*', '', '   '
  ]
  const normalisers: Array<[string, (value: unknown) => string | undefined]> = [
    ['country', normalizeCountry],
    ['state', (value) => normalizeState(value)],
    ['state (US)', (value) => normalizeState(value, 'US')],
    ['city', normalizeCity],
    ['name', normalizeName],
    ['email', normalizeEmail],
    ['phone', (value) => normalizePhone(value)],
    ['phone (US)', (value) => normalizePhone(value, 'US')],
    ['zip', (value) => normalizeZip(value)],
    ['zip (US)', (value) => normalizeZip(value, 'US')],
    ['birthday', normalizeBirthday],
    ['gender', normalizeGender]
  ]
  for (const placeholder of placeholders) {
    for (const [key, normalise] of normalisers) t.equal(normalise(placeholder), undefined, `${key} ${JSON.stringify(placeholder)}`)
    t.same(hashedTraitKeys({
      email: placeholder,
      phone: placeholder,
      firstName: placeholder,
      lastName: placeholder,
      name: placeholder,
      gender: placeholder,
      birthday: placeholder,
      address: { city: placeholder, state: placeholder, postalCode: placeholder, country: placeholder }
    }), {}, `every key of ${JSON.stringify(placeholder)}: none`)
  }
  t.equal(normalizeCountry('N/A'), undefined, 'N/A is not Namibia')
  t.same(hashedTraitKeys({ address: { country: 'n.a.', state: 'Texas' } }), { st: sha('tx') },
    'a placeholder country is no country: US state names still map')
  t.same(hashedTraitKeys({ name: 'Mary N/A' }), { fn: sha('mary') }, 'a placeholder word of a full name is not a last name')
})

t.test('rule 1, placeholders are not values: a bare NA stays Namibia, or a name', async (t) => {
  const cases: Array<[string, (value: unknown) => string | undefined, string]> = [
    ['NA', normalizeCountry, 'na'],
    ['na', normalizeCountry, 'na'],
    ['Namibia', normalizeCountry, 'na'],
    ['NA', normalizeName, 'na'],
    ['NA', normalizeState, 'na'],
    ['Nan', normalizeName, 'nan'],
    ['Nonne', normalizeName, 'nonne'],
    ['Unknown Pleasures', normalizeCity, 'unknownpleasures']
  ]
  for (const [value, normalise, expected] of cases) t.equal(normalise(value), expected, value)
  t.equal(hashedTraitKeys({ address: { country: 'NA' } }).country, '3d9fc4bde7ceef058d65b00186e79c1f14b42687b491644c303065135b644e18', 'sha256("na"), pinned')
  t.equal(normalizeZip('0'), '0', 'a digit is a value')
})

t.test('rule 2, do not invent a birthday: a year alone or a year and month is no db', async (t) => {
  const yearOnly = ['1997', '1997-02', '1997/2', '02/1997', 'Feb 1997', 'February 1997', 1997]
  for (const value of yearOnly) {
    t.equal(normalizeBirthday(value), undefined, `${String(value)}: no db`)
    t.same(hashedTraitKeys({ birthday: value }), { doby: sha('1997') }, `${String(value)}: the legacy year only, no month or day made up`)
  }
  t.same(hashedTraitKeys({ birthday: '1997' }), { doby: '0985b889a1fe4f4e1fb925061ac6fb2247f10875f5fcbe63eec2ab55ed68970e' }, 'sha256("1997"), pinned')
  t.same(hashedTraitKeys({ birthday: '1997-13' }), {}, 'a month that is none: nothing')
  t.same(hashedTraitKeys({ birthday: '1899' }), {}, 'a year before 1900: nothing')
  t.same(hashedTraitKeys({ birthday: String(THIS_YEAR + 1) }), {}, 'a year to come: nothing')
  t.ok(hasNoMatchKey(hashedTraitKeys({ birthday: '1997' })), 'a year alone is no match key')
})

t.test('rule 2, do not invent a birthday: complete, unambiguous forms are read', async (t) => {
  const cases: Array<[unknown, string | undefined]> = [
    // month names in English
    ['Feb 16, 1997', '19970216'], ['16 February 1997', '19970216'], ['February 16, 1997', '19970216'],
    ['16 Feb 1997', '19970216'], ['Feb. 16, 1997', '19970216'], ['February 16th, 1997', '19970216'],
    ['16-Feb-1997', '19970216'], ['16th of February 1997', '19970216'], ['sept 3 1985', '19850903'],
    // single-digit parts, US month-first with slashes or dashes, day-first with dots
    ['1997-2-16', '19970216'], ['1997-2-6', '19970206'], ['2/16/1997', '19970216'], ['02-16-1997', '19970216'],
    ['2-6-1997', '19970206'], ['16.2.1997', '19970216'], ['1997/2/16', '19970216'], ['19970216', '19970216'],
    // ISO date-times: the date part as written
    ['1997-02-16T10:00:00Z', '19970216'], ['1997-02-16 10:00', '19970216'], ['1997-02-16T23:30:00-05:00', '19970216'],
    ['1997-02-16T00:00:00.000Z', '19970216'], ['1997-02-16T10:00+0100', '19970216'],
    // impossible dates, years out of range, ambiguous or unreadable forms
    ['1997-02-30', undefined], ['02-30-1997', undefined], ['Feb 30, 1997', undefined], ['1997-02-29', undefined],
    ['2000-02-29', '20000229'], ['16-02-1997', undefined], ['2/16/97', undefined], ['1899-12-31', undefined],
    [`${THIS_YEAR + 1}-01-01`, undefined], ['Feb 16', undefined], ['Smarch 16, 1997', undefined],
    ['Feb 16, 1997, 1998', undefined], ['1997-02-16T25', undefined], ['1997-02-16 lunch', undefined]
  ]
  for (const [value, expected] of cases) t.equal(normalizeBirthday(value), expected, String(value))
  t.same(hashedTraitKeys({ birthday: 'Feb 16, 1997' }), {
    db: '01acdbf6ec7b4f478a225f1a246e5d6767eeab1a7ffa17f025265b5b94f40f0c',
    doby: sha('1997'),
    dobm: sha('02'),
    dobd: sha('16')
  }, 'sha256("19970216"), pinned; the legacy parts of a whole date')
})

t.test('rule 3, junk phones are not sent: 7–15 digits, possible for their country', async (t) => {
  const cases: Array<[unknown, string | undefined, string | undefined]> = [
    ['1-800-FLOWERS', undefined, undefined], // digits only: 1800
    ['1-800-FLOWERS', 'US', undefined],
    ['6505551212 6505551213', undefined, undefined], // two numbers run together: 20 digits
    ['6505551212 6505551213', 'US', undefined],
    ['1234567890123456', undefined, undefined], // 16 digits
    ['123456', undefined, undefined],
    ['123', 'US', undefined],
    ['555-1212', 'US', undefined], // no area code: not possible in the US
    ['020 7946 0958', 'US', undefined], // a UK number in a US address: not possible there
    ['+1 123', undefined, undefined],
    ['4011234567', undefined, '4011234567'], // no country to be had: the digits, 10 of them
    ['1234567', undefined, '1234567'],
    ['+44 20 7946 0958 x123', undefined, '442079460958'],
    ['+44 20 7946 0958 ext. 123', undefined, '442079460958'],
    ['(650) 555-1212 ext 9', 'US', '16505551212'],
    ['650-555-1212 x 99', undefined, '6505551212'], // the extension's digits are not counted in
    ['650.555.1212#12', undefined, '6505551212'],
    ['+44 (0)20 7946 0958', undefined, '442079460958'],
    ['+44 (0) 20 7946 0958', 'GB', '442079460958'],
    ['(0)20 7946 0958', 'GB', '442079460958'],
    [16505551212, undefined, '16505551212']
  ]
  for (const [value, region, expected] of cases) t.equal(normalizePhone(value, region), expected, `${String(value)} (${region ?? 'no country'})`)
  t.same(hashedTraitKeys({ phone: '+44 (0)20 7946 0958 ext. 12' }), { ph: ['35e206e5dec4c89b9e8b71b8c32724a5bb518483ac5a20c6617d738375b3b823'] },
    'sha256("442079460958"), pinned')
  t.same(hashedTraitKeys({ phone: ['1-800-FLOWERS', '+1 650 555 1212'] }), { ph: [sha('16505551212')] }, 'a junk phone in a list is left out')
})

t.test('rule 3, junk emails are not sent: one @, a dot in the domain, no spaces', async (t) => {
  const cases: Array<[unknown, string | undefined]> = [
    ['not-an-email', undefined], ['user@localhost', undefined], ['a b@example.com', undefined],
    ['user@exa mple.com', undefined], ['a@b@example.com', undefined], ['@example.com', undefined],
    ['user@example.', undefined], ['user@.com', undefined], ['user@', undefined], [7, undefined],
    ['Mary@Example.COM', 'mary@example.com'], ['  a@b.co  ', 'a@b.co'], ['first.last+tag@mail.example.org', 'first.last+tag@mail.example.org'],
    ['Valéry@exemple.fr', 'valéry@exemple.fr'], [`${'a'.repeat(240)}@example.com`, `${'a'.repeat(240)}@example.com`],
    [`${'a'.repeat(250)}@example.com`, undefined] // over 254 characters
  ]
  for (const [value, expected] of cases) t.equal(normalizeEmail(value), expected, String(value).slice(0, 40))
})

t.test('rule 3, a dropped key counts for nothing in the weak-key check', async (t) => {
  const junkPhone = hashedTraitKeys({ phone: '1-800-FLOWERS', gender: 'm' })
  t.same(junkPhone, { ge: sha('m') }, 'only the gender is left')
  t.ok(isTooWeak(junkPhone), 'a junk phone does not make a gender strong')
  t.ok(isTooWeak(hashedTraitKeys({ email: 'not-an-email', firstName: 'Mary', gender: 'f' })))
  t.ok(hasNoMatchKey(hashedTraitKeys({ email: 'user@localhost', phone: '123' })), 'only junk: no match key at all')
  t.notOk(isTooWeak(hashedTraitKeys({ email: 'mary@example.com', gender: 'f' })))
})

t.test('rule 4, state abbreviations with a dot and the Hawaiian ʻokina', async (t) => {
  const cases: Array<[string, string]> = [
    ['Calif.', 'ca'], ['Mass.', 'ma'], ['Penn.', 'pa'], ['Wash.', 'wa'], ['Ala.', 'al'], ['Ariz.', 'az'], ['Ark.', 'ar'],
    ['Colo.', 'co'], ['Conn.', 'ct'], ['Del.', 'de'], ['Fla.', 'fl'], ['Ga.', 'ga'], ['Ill.', 'il'], ['Ind.', 'in'],
    ['Kan.', 'ks'], ['Kans.', 'ks'], ['Ky.', 'ky'], ['La.', 'la'], ['Md.', 'md'], ['Mich.', 'mi'], ['Minn.', 'mn'],
    ['Miss.', 'ms'], ['Mo.', 'mo'], ['Mont.', 'mt'], ['Neb.', 'ne'], ['Nebr.', 'ne'], ['Nev.', 'nv'], ['N.H.', 'nh'],
    ['N.J.', 'nj'], ['N.M.', 'nm'], ['N.Mex.', 'nm'], ['N.Y.', 'ny'], ['N.C.', 'nc'], ['N.D.', 'nd'], ['N.Dak.', 'nd'],
    ['Okla.', 'ok'], ['Ore.', 'or'], ['Oreg.', 'or'], ['Pa.', 'pa'], ['R.I.', 'ri'], ['S.C.', 'sc'], ['S.D.', 'sd'],
    ['S.Dak.', 'sd'], ['Tenn.', 'tn'], ['Tex.', 'tx'], ['Vt.', 'vt'], ['Va.', 'va'], ['W.Va.', 'wv'], ['Wis.', 'wi'],
    ['Wisc.', 'wi'], ['Wyo.', 'wy'], ['D.C.', 'dc'], ['Wash. D.C.', 'dc'], ['CALIF', 'ca'],
    ['Hawaiʻi', 'hi'], ['HAWAIʻI', 'hi'], ['Hawaiʼi', 'hi'], ["Hawai'i", 'hi'], ['Hawaii', 'hi'],
    // neither a code nor a known name: normalised as before
    ['Bavaria', 'bavaria'], ['Calif', 'ca'], ['Californ.', 'californ']
  ]
  for (const [value, expected] of cases) t.equal(normalizeState(value, 'US'), expected, value)
  t.equal(normalizeState('Calif.'), 'ca', 'no country: read as a US state')
  t.equal(normalizeState('Calif.', 'DE'), 'calif', 'another country: no translation')
  t.equal(hashedTraitKeys({ address: { state: 'Calif.', country: 'US' } }).st, '6959097001d10501ac7d54c0bdb8db61420f658f2922cc26e46d536119a31126', 'sha256("ca"), pinned')
})

/* Issue 14: trait spellings, and the memo's bytes ---------------------------------------------- */

t.test('trait spellings: each is hashed as the key it spells', async (t) => {
  t.same(hashedTraitKeys({
    mobile: '+1 (650) 555-1212',
    email_address: 'Mary@Example.com',
    first_name: 'Mary',
    Last_Name: 'Smith',
    sex: 'Female',
    dob: '1997-02-16',
    city: 'San Francisco',
    province: 'California',
    zip_code: '94107-1234',
    country_code: 'US'
  }), {
    em: [sha('mary@example.com')],
    ph: [sha('16505551212')],
    ge: sha('f'),
    fn: sha('mary'),
    ln: sha('smith'),
    ct: sha('sanfrancisco'),
    st: sha('ca'),
    zp: sha('94107'),
    country: sha('us'),
    db: sha('19970216'),
    doby: sha('1997'),
    dobm: sha('02'),
    dobd: sha('16')
  }, 'top-level city, state, zip and country fill the address parts')
  t.same(hashedTraitKeys({ phoneNumber: '4011234567' }), { ph: [sha('4011234567')] }, 'phoneNumber')
  t.same(hashedTraitKeys({ 'phone-number': '+14011234567' }), { ph: [sha('14011234567')] }, 'phone-number')
  t.same(hashedTraitKeys({ full_name: 'Ham Solo' }), { fn: sha('ham'), ln: sha('solo') }, 'full_name splits like name')
  t.same(hashedTraitKeys({ address: { zip: '02818-1234', country: 'USA' } }), { zp: sha('02818'), country: sha('us') }, 'address.zip')
})

t.test('trait spellings: the canonical spelling wins, another fills a key it does not give', async (t) => {
  t.same(hashedTraitKeys({ phone: '+1 650 555 1212', mobile: '+1 401 123 4567' }), { ph: [sha('16505551212')] }, 'both present: phone')
  t.same(hashedTraitKeys({ mobile: '+1 401 123 4567', phone: '+1 650 555 1212' }), { ph: [sha('16505551212')] }, 'whatever the order')
  t.same(hashedTraitKeys({ phone: 'n/a', mobile: '+1 401 123 4567' }), { ph: [sha('14011234567')] }, 'a junk phone is no phone: mobile fills it')
  t.same(hashedTraitKeys({ mobile: '123', cell: '+1 401 123 4567' }), { ph: [sha('14011234567')] }, 'the first spelling that gives a key')
  t.same(hashedTraitKeys({ firstName: 'Mary', first_name: 'Jane', name: 'Ham Solo' }), { fn: sha('mary'), ln: sha('solo') })
  t.same(hashedTraitKeys({ first_name: 'Jane', name: 'Ham Solo' }), { fn: sha('jane'), ln: sha('solo') }, 'a spelling of firstName beats the full name')
  t.same(hashedTraitKeys({ address: { city: 'Paris', country: 'FR' }, city: 'Lyon', country: 'US' }), { ct: sha('paris'), country: sha('fr') },
    'the address wins over top-level spellings')
  t.same(hashedTraitKeys({ address: { postalCode: '75008', zip: '99999' }, zip: '11111' }), { zp: sha('75008') })
  t.same(hashedTraitKeys({ address: { zip: '75008' }, zip: '11111' }), { zp: sha('75008') }, 'address.zip before a top-level zip')
  t.same(hashedTraitKeys({ phone: '020 7946 0958', country_code: 'GB' }), { ph: [sha('442079460958')], country: sha('gb') },
    'a spelling of the country drives the phone\'s region')
  t.same(hashedTraitKeys({ state: 'Texas', country: 'Narnia' }), { st: sha('texas') }, 'an unrecognised country is not the US')
})

t.test('trait spellings: own properties only; prototype names are nothing', async (t) => {
  const hostile = JSON.parse('{"constructor": "a@b.co", "__proto__": {"email": "a@b.co"}, "toString": "+1 650 555 1212", "hasOwnProperty": "m", "valueOf": "1997-02-16"}')
  t.same(hashedTraitKeys(hostile), {})
  t.same(hashedTraitKeys(JSON.parse('{"address": {"constructor": "Paris", "__proto__": {"city": "Paris"}}}')), {})
  const inherited = Object.create({ email: 'a@b.co', phone: '+16505551212', address: { city: 'Paris' } }) as Record<string, unknown>
  t.same(hashedTraitKeys(inherited), {}, 'inherited traits are not read')
  const address = Object.create({ city: 'Paris' }) as Record<string, unknown>
  t.same(hashedTraitKeys({ address }), {}, 'nor inherited address parts')
})

t.test('the memos stay within the byte budget: 30 KB emails, and many near-limit ones', async (t) => {
  clearMatchKeyCache()
  t.equal(matchKeyMemoBytes().bytes, 0)
  t.ok(matchKeyMemoBytes().maxBytes <= MEMO_BUDGET_BYTES, 'the memos\' shares add up to at most the budget')
  const long = 'x'.repeat(30 * 1024)
  for (let i = 0; i < 4_000; i++) hashedTraitKeys({ email: `${i}${long}@example.com`, firstName: `${i}${long}`, address: { city: `${long}${i}` } })
  t.equal(matchKeyMemoBytes().bytes, 0, '30 KB values are dropped and not remembered')
  let most = 0
  for (let i = 0; i < 30_000; i++) {
    hashedTraitKeys({ email: `${i}.${'y'.repeat(230)}@example.com`, firstName: `${'z'.repeat(250)}${i}`, phone: `+1 650 555 ${String(i).padStart(4, '0').slice(-4)}` })
    if (i % 1000 === 0) most = Math.max(most, matchKeyMemoBytes().bytes)
  }
  most = Math.max(most, matchKeyMemoBytes().bytes)
  t.ok(most <= MEMO_BUDGET_BYTES, `at most ${most} counted bytes, ≤ ${MEMO_BUDGET_BYTES}`)
  t.ok(most > 0, 'values of legitimate length are remembered')
  clearMatchKeyCache()
})

t.test('hashedTraitKeys: a long list is de-duplicated too, in order', async (t) => {
  const emails = Array.from({ length: 60 }, (_, i) => `user${i % 30}@example.com`)
  t.same(hashedTraitKeys({ email: emails }).em, Array.from({ length: 30 }, (_, i) => sha(`user${i}@example.com`)))
})
