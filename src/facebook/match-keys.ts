// Customer information ("match keys") for Meta: normalisation and SHA-256 hashing of Segment
// traits, following the match-key table of spec/facebook.md and Meta's customer information
// parameters page (reference/meta-graph-api-notes.md §2).
import * as crypto from 'node:crypto'
import countries from 'i18n-iso-countries'
import { isSupportedCountry, parsePhoneNumberFromString, type CountryCode } from 'libphonenumber-js'
import { DateTime } from 'luxon'
import { Memo, MEMO_BUDGET_BYTES } from './memo.js'
import { addressPartOf, matchKeyTraitOf, TRAIT_NAME_MEMO_BYTES, type MatchKeyTrait } from './trait-spellings.js'
import { US_STATE_CODES } from './us-states.js'

/**
 * Match keys in canonical form: every PII key is already hashed (64 lower-case hex).
 * `external_id` is the raw trimmed userId (the legacy format sends it as is, the Conversions API
 * serializer hashes it) and `lead_id` the raw Lead Ads id; neither is kept in profiles.
 * `doby`/`dobm`/`dobd` are the hashed parts of `db` the legacy format sends; a birthday given as
 * a year alone (or a year and month) has `doby` only, and no `db`.
 */
export interface MatchKeys {
  em?: string[]
  ph?: string[]
  ge?: string
  fn?: string
  ln?: string
  ct?: string
  st?: string
  zp?: string
  country?: string
  db?: string
  doby?: string
  dobm?: string
  dobd?: string
  external_id?: string
  lead_id?: string
}

const SHA256_HEX = /^[0-9a-fA-F]{64}$/
// spec: "no punctuation" keeps letters and digits of any script (accents and other marks stay)
const NOT_LETTER_OR_DIGIT = /[^\p{L}\p{M}\p{N}]+/gu
const COMBINING_MARKS = /\p{M}+/gu
const WHITESPACE = /\s+/g
const WHITESPACE_CHAR = /\s/
const NOT_DIGIT = /\D+/g
const LEADING_ZEROS = /^0+/
const LETTERS_2_OR_3 = /^[a-z]{2,3}$/i
const FIVE_DIGITS = /^\d{5}/
const EIGHT_DIGITS = /^\d{8}$/

// Node ≥ 20.12 has a one-shot hash that skips creating a Hash object
const sha256: (value: string) => string = typeof crypto.hash === 'function'
  ? (value) => crypto.hash('sha256', value, 'hex')
  : /* c8 ignore next */ (value) => crypto.createHash('sha256').update(value).digest('hex')

export function isSha256Hex (value: string): boolean {
  return value.length === 64 && SHA256_HEX.test(value)
}

/**
 * SHA-256, lower-case hex, of the UTF-8 NFC form of `value` (Meta's example `Valéry` only
 * matches precomposed). A value that already is 64 hex characters is passed through, lower-cased.
 */
export function sha256Hex (value: string): string {
  if (isSha256Hex(value)) return value.toLowerCase()
  return sha256(value.normalize('NFC'))
}

/* ------------------------------------------------------------------------------------------ */
/* What is not a value: placeholders, and text too long to be one                              */
/* ------------------------------------------------------------------------------------------ */

// Issue 14: every normaliser runs in time linear in its input. A value longer than its bound
// cannot be one and is dropped before any regular expression, luxon or libphonenumber sees it
// (a string over four times the bound is not even trimmed), so a 100 KB value costs about what
// a 1 KB one does.
const MAX_EMAIL_LENGTH = 254 // RFC 5321: a forward path holds at most 254 characters of address
const MAX_PHONE_LENGTH = 40 // 15 digits, a country code, separators, an extension
const MAX_BIRTHDAY_LENGTH = 40 // `Wednesday, September 16th, 1997`, an ISO date-time with offset
const MAX_PLACE_LENGTH = 100 // country, state, zip
const MAX_NAME_LENGTH = 256 // names (a full name too) and cities
const MAX_GENDER_LENGTH = 16
const PADDED_LENGTH = 4

// spec/facebook.md: placeholders are not values. Compared folded (lower-case letters and digits
// only), so `(none)`, `NULL` and `-unknown-` are placeholders too
const PLACEHOLDER_WORDS: ReadonlySet<string> = new Set([
  'none', 'null', 'nil', 'undefined', 'unknown', 'notapplicable', 'notavailable'
])
const LONGEST_PLACEHOLDER = 24
const LETTER_OR_DIGIT = /[\p{L}\p{N}]/u

/**
 * Whether trimmed text is a placeholder (spec/facebook.md): `N/A`, `n.a.`, `none`, `null`, `nil`,
 * `undefined`, `unknown` in any case, or a value with no letter or digit (`-`, `?`). A bare `NA`
 * is not: it is Namibia's code, or a name; only `N/A`-like forms with punctuation or spaces are.
 */
function isPlaceholder (text: string): boolean {
  if (!LETTER_OR_DIGIT.test(text)) return true
  if (text.length > LONGEST_PLACEHOLDER) return false
  const folded = text.toLowerCase().replace(NOT_LETTER_OR_DIGIT, '')
  return PLACEHOLDER_WORDS.has(folded) || (folded === 'na' && text.length > 2)
}

/**
 * A trait value as trimmed text, or undefined when it is none: not a string or number, empty,
 * longer than `maxLength`, or a placeholder. Numbers count (phones and zips are often sent as
 * numbers). Only the memos' miss path calls it: a remembered value is not checked again.
 */
function asText (value: unknown, maxLength: number): string | undefined {
  let text: string
  if (typeof value === 'string') {
    // bounded before it is even trimmed: no value is that long, however many spaces pad it (a
    // fixed-width column pads a value to its width; four times the bound allows for that)
    if (value.length > PADDED_LENGTH * maxLength) return undefined
    text = value.trim()
  } else if (typeof value === 'number' && Number.isFinite(value)) text = String(value)
  else return undefined
  if (text === '' || text.length > maxLength || isPlaceholder(text)) return undefined
  return text
}

function isRecord (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/* ------------------------------------------------------------------------------------------ */
/* Normalisers: each returns the string Meta wants hashed, or undefined when there is none     */
/* ------------------------------------------------------------------------------------------ */

/**
 * Meta: trim, lower-case. spec: not sent unless it has exactly one `@` (with something before
 * it), a dot inside the domain part and no spaces — `not-an-email` and `user@localhost` match
 * nobody.
 */
export function normalizeEmail (value: unknown): string | undefined {
  const text = asText(value, MAX_EMAIL_LENGTH)
  if (text === undefined) return undefined
  const email = text.toLowerCase().normalize('NFC')
  const at = email.indexOf('@')
  if (at <= 0 || email.indexOf('@', at + 1) !== -1 || WHITESPACE_CHAR.test(email)) return undefined
  const dot = email.indexOf('.', at + 2)
  return dot !== -1 && dot < email.length - 1 ? email : undefined
}

/** Lower-case, NFC, letters and digits of any script only: names, cities, states. */
function lettersAndDigits (value: unknown, maxLength: number): string | undefined {
  const text = asText(value, maxLength)
  if (text === undefined) return undefined
  // marks are kept, so stripping before composing gives the same letters
  const normalised = text.toLowerCase().replace(NOT_LETTER_OR_DIGIT, '').normalize('NFC')
  return normalised === '' ? undefined : normalised
}

/** Meta `fn`/`ln`: lower-case, no punctuation, no spaces; other scripts allowed (UTF-8). */
export function normalizeName (value: unknown): string | undefined {
  return lettersAndDigits(value, MAX_NAME_LENGTH)
}

/** Meta `ct`: lower-case, no punctuation, no special characters, no spaces. */
export function normalizeCity (value: unknown): string | undefined {
  return lettersAndDigits(value, MAX_NAME_LENGTH)
}

const GENDERS: ReadonlyMap<string, string> = new Map([
  ['m', 'm'],
  ['male', 'm'],
  ['f', 'f'],
  ['female', 'f']
])

/** spec: `m`/`male` → `m`, `f`/`female` → `f` (any case); anything else is not sent. */
export function normalizeGender (value: unknown): string | undefined {
  const text = asText(value, MAX_GENDER_LENGTH)
  return text === undefined ? undefined : GENDERS.get(text.toLowerCase())
}

/** Country names folded for matching: no accents, no punctuation, lower-case (`U.S.A.` → `usa`). */
function foldName (value: string): string {
  return value.normalize('NFD').replace(COMBINING_MARKS, '').toLowerCase().replace(NOT_LETTER_OR_DIGIT, '')
}

let countryByName: Map<string, string> | undefined

// Every name i18n-iso-countries knows, in every language it has (English first, so an English
// name wins a clash): `United States`, `Deutschland`, `Royaume-Uni` … → alpha-2. Built on the
// first name that is not a code, then kept.
function countryNameIndex (): Map<string, string> {
  if (countryByName !== undefined) return countryByName
  const index = new Map<string, string>()
  const languages = ['en', ...countries.langs().filter((language) => language !== 'en')]
  for (const language of languages) {
    const names = countries.getNames(language, { select: 'all' })
    for (const [code, list] of Object.entries(names)) {
      for (const name of list) {
        const key = foldName(name)
        if (key !== '' && !index.has(key)) index.set(key, code.toLowerCase())
      }
    }
  }
  countryByName = index
  return index
}

function countryCode (candidate: string): string | undefined {
  if (!LETTERS_2_OR_3.test(candidate)) return undefined
  if (candidate.length === 2) return countries.isValid(candidate) ? candidate.toLowerCase() : undefined
  return countries.alpha3ToAlpha2(candidate.toUpperCase())?.toLowerCase()
}

function countryOfText (text: string): string | undefined {
  const folded = foldName(text)
  return countryCode(text) ?? countryCode(folded) ?? countryNameIndex().get(folded)
}

/**
 * Meta `country`: ISO 3166-1 alpha-2, lower-case (`USA`, `United States`, `us` → `us`). A
 * placeholder is no country: `N/A` is not Namibia (a bare `NA` is).
 */
export function normalizeCountry (value: unknown): string | undefined {
  const text = asText(value, MAX_PLACE_LENGTH)
  return text === undefined ? undefined : countryOfText(text)
}

// The country a trait set speaks of, for the rules that depend on it: a code, ABSENT when no
// country was given (a placeholder is none), UNKNOWN when one was given that we could not
// recognise.
const ABSENT = ''
const UNKNOWN = '?'

function regionOf (country: unknown): string {
  const text = asText(country, MAX_PLACE_LENGTH)
  if (text === undefined) return ABSENT
  return countryOfText(text) ?? UNKNOWN
}

function normalizeStateIn (value: unknown, region: string): string | undefined {
  const state = lettersAndDigits(value, MAX_PLACE_LENGTH)
  if (state === undefined) return undefined
  // spec: US state names → 2-letter code when the country is the US or absent; the table has
  // the names, the abbreviations written with dots (`Calif.`, `W.Va.`) and `Hawaiʻi`
  if (region === 'us' || region === ABSENT) return US_STATE_CODES.get(state) ?? state
  return state
}

/**
 * Meta `st`: US state names and abbreviations become their 2-letter code (when the country is
 * the US or absent); lower-case, no punctuation or spaces.
 */
export function normalizeState (value: unknown, country?: string): string | undefined {
  return normalizeStateIn(value, regionOf(country))
}

function normalizeZipIn (value: unknown, region: string): string | undefined {
  const text = asText(value, MAX_PLACE_LENGTH)
  if (text === undefined) return undefined
  let zip = text.toLowerCase().replace(WHITESPACE, '').normalize('NFC')
  const dash = zip.indexOf('-')
  if (dash !== -1) zip = zip.slice(0, dash)
  if (region === 'us') {
    // a ZIP code sent as a number has lost its leading zeros (02818 → 2818)
    if (typeof value === 'number' && zip.length < 5) zip = zip.padStart(5, '0')
    // Meta: US zips are the first 5 digits only (ZIP+4 without its dash too)
    const five = FIVE_DIGITS.exec(zip)
    if (five !== null) zip = five[0]
  }
  return zip === '' ? undefined : zip
}

/** Meta `zp`: lower-case, no spaces, nothing from the first dash on; US: the first 5 digits. */
export function normalizeZip (value: unknown, country?: string): string | undefined {
  return normalizeZipIn(value, regionOf(country))
}

// North American numbers as people write them: 10 digits with an area code of 2–9, maybe
// `1`/`+1` first, maybe the usual separators. libphonenumber costs ~18 µs a number (it builds
// its regular expressions on every call) and always answers `1` + those 10 digits for them;
// test/facebook/match-keys.test.ts checks that against the library on random numbers
const NANP_NUMBER = /^(?:(\+?1)[\s.-]?)?(?:\(([2-9]\d\d)\)|([2-9]\d\d))[\s.-]?(\d{3})[\s.-]?(\d{4})$/
const NANP_REGIONS: ReadonlySet<string> = new Set(['us', 'ca'])
// spec: an extension (`x123`, `ext. 123`, `#123`) and a trunk prefix written `(0)` go before
// parsing; the fallback would otherwise count their digits in
const EXTENSION = /[\s,;]*(?:x|ext\.?|extension|#)\s*\d{1,7}$/i
const TRUNK_PREFIX = /\(0\)/g
// E.164: at most 15 digits; Meta matches nothing shorter than a local number
const MIN_PHONE_DIGITS = 7
const MAX_PHONE_DIGITS = 15

function phoneDigits (digits: string): string | undefined {
  return digits.length >= MIN_PHONE_DIGITS && digits.length <= MAX_PHONE_DIGITS ? digits : undefined
}

function normalizePhoneIn (value: unknown, region: string): string | undefined {
  const raw = asText(value, MAX_PHONE_LENGTH)
  if (raw === undefined) return undefined
  const text = raw.replace(EXTENSION, '').replace(TRUNK_PREFIX, '')
  const nanp = NANP_NUMBER.exec(text)
  if (nanp !== null && (nanp[1] === '+1' || NANP_REGIONS.has(region))) {
    return '1' + (nanp[2] ?? nanp[3]) + nanp[4] + nanp[5]
  }
  const defaultCountry = region.length === 2 && isSupportedCountry(region.toUpperCase())
    ? region.toUpperCase() as CountryCode
    : undefined
  // spec: keep the parsed form even where the library calls the number not valid (the seed's
  // own 401-123-4567 is not), as long as it is possible for its country
  const parsed = parsePhoneNumberFromString(text, defaultCountry)
  if (parsed !== undefined) return parsed.isPossible() ? phoneDigits(parsed.number.slice(1)) : undefined
  // there was a country to read it in (the address's, or a `+` code), and it could not be read
  if (defaultCountry !== undefined || text.startsWith('+')) return undefined
  // no country to be had: digits only, leading zeros removed (Meta's own normaliser)
  return phoneDigits(text.replace(NOT_DIGIT, '').replace(LEADING_ZEROS, ''))
}

/**
 * Meta `ph`: E.164 digits without `+`, parsed with `countryHint` (the address country) as the
 * default region, so US `4011234567` → `14011234567`. Not sent: fewer than 7 or more than 15
 * digits, or not a possible number for its country.
 */
export function normalizePhone (value: unknown, countryHint?: string): string | undefined {
  return normalizePhoneIn(value, regionOf(countryHint))
}

/* Birthdays ---------------------------------------------------------------------------------- */

// Birthdays as people send them. Only complete, unambiguous dates: day-first forms are read
// only with dots (`16.2.1997`), slashes and dashes are read the US way, as Meta's own example
// `2/16/1997` is; a two-digit year is refused (which century?)
// `1997-02-16`, `1997/2/16`, `1997.2.16`, and ISO date-times (`1997-02-16T10:00:00Z`,
// `1997-02-16 10:00`): the calendar date as written, whatever the offset
const YEAR_FIRST = /^(\d{4})([-/.])(\d{1,2})\2(\d{1,2})(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?\s?(?:Z|[+-]\d{2}(?::?\d{2})?)?)?$/i
// `2/16/1997`, `02-16-1997`
const MONTH_FIRST = /^(\d{1,2})([/-])(\d{1,2})\2(\d{4})$/
// `16.2.1997`
const DAY_FIRST_DOTTED = /^(\d{1,2})\.(\d{1,2})\.(\d{4})$/
// `1997`, `1997-02`, `02/1997`: a year, maybe a month — not a date of birth
const YEAR_MONTH = /^(\d{4})(?:[-/.](\d{1,2}))?$/
const MONTH_YEAR = /^(\d{1,2})[-/.](\d{4})$/
// `Feb 16, 1997`, `16 February 1997`, `February 16th, 1997`, `16-Feb-1997`, `Feb 1997`
const WORDED_DATE = /^[a-z0-9\s,./-]+$/i
const DATE_TOKEN = /[a-z]+|\d+/gi
const DIGITS = /^\d+$/
const ORDINAL_SUFFIXES: ReadonlySet<string> = new Set(['st', 'nd', 'rd', 'th', 'of'])
const MONTHS: ReadonlyMap<string, number> = new Map([
  ['january', 1], ['jan', 1], ['february', 2], ['feb', 2], ['march', 3], ['mar', 3], ['april', 4],
  ['apr', 4], ['may', 5], ['june', 6], ['jun', 6], ['july', 7], ['jul', 7], ['august', 8], ['aug', 8],
  ['september', 9], ['sep', 9], ['sept', 9], ['october', 10], ['oct', 10], ['november', 11],
  ['nov', 11], ['december', 12], ['dec', 12]
])
const EARLIEST_BIRTH_YEAR = 1900

/** A birthday as read: a whole date, or a year alone (`month`/`day` 0) when only that was given. */
interface BirthdayParts { year: number, month: number, day: number }

function isBirthYear (year: number): boolean {
  // Meta: "1900 to current year"
  return year >= EARLIEST_BIRTH_YEAR && year <= DateTime.utc().year
}

/** A whole date when it exists and its year is a birth year; a year alone is refused here. */
function wholeDate (year: number, month: number, day: number): BirthdayParts | undefined {
  if (!isBirthYear(year) || !DateTime.utc(year, month, day).isValid) return undefined
  return { year, month, day }
}

/** The year of a year alone or a year and month (`month`, when given, must be one). */
function yearAlone (year: number, month?: string): BirthdayParts | undefined {
  if (month !== undefined && (Number(month) < 1 || Number(month) > 12)) return undefined
  return isBirthYear(year) ? { year, month: 0, day: 0 } : undefined
}

/** `Feb 16, 1997`, `16 February 1997` (English month names), or a month and year only. */
function wordedDate (text: string): BirthdayParts | undefined {
  if (!WORDED_DATE.test(text)) return undefined
  const tokens = (text.toLowerCase().match(DATE_TOKEN) ?? []).filter((token) => !ORDINAL_SUFFIXES.has(token))
  let month: number | undefined
  const numbers: string[] = []
  for (const token of tokens) {
    const named = MONTHS.get(token)
    if (named !== undefined && month === undefined) month = named
    else if (named === undefined && DIGITS.test(token)) numbers.push(token)
    else return undefined
  }
  if (month === undefined) return undefined
  // the year is the 4-digit number, the day the 1–2 digit one: either order is unambiguous
  const year = numbers.find((n) => n.length === 4)
  const day = numbers.find((n) => n.length <= 2)
  if (year === undefined) return undefined
  if (numbers.length === 1) return yearAlone(Number(year), String(month))
  if (numbers.length !== 2 || day === undefined) return undefined
  return wholeDate(Number(year), month, Number(day))
}

function birthdayParts (value: unknown): BirthdayParts | undefined {
  if (value instanceof Date) {
    const date = DateTime.fromJSDate(value, { zone: 'utc' })
    return date.isValid ? wholeDate(date.year, date.month, date.day) : undefined
  }
  const text = asText(value, MAX_BIRTHDAY_LENGTH)
  if (text === undefined) return undefined
  let match: RegExpExecArray | null
  if (EIGHT_DIGITS.test(text)) {
    return wholeDate(Number(text.slice(0, 4)), Number(text.slice(4, 6)), Number(text.slice(6, 8)))
  }
  if ((match = YEAR_FIRST.exec(text)) !== null) return wholeDate(Number(match[1]), Number(match[3]), Number(match[4]))
  if ((match = MONTH_FIRST.exec(text)) !== null) return wholeDate(Number(match[4]), Number(match[1]), Number(match[3]))
  if ((match = DAY_FIRST_DOTTED.exec(text)) !== null) return wholeDate(Number(match[3]), Number(match[2]), Number(match[1]))
  if ((match = YEAR_MONTH.exec(text)) !== null) return yearAlone(Number(match[1]), match[2])
  if ((match = MONTH_YEAR.exec(text)) !== null) return yearAlone(Number(match[2]), match[1])
  return wordedDate(text)
}

const twoDigits = (n: number): string => (n < 10 ? '0' : '') + String(n)

/**
 * Meta `db`: `YYYYMMDD`, year from 1900 to this year (Meta: "1900 to current year"). A year
 * alone (`1997`) or a year and month (`1997-02`) is not a date of birth: undefined.
 */
export function normalizeBirthday (value: unknown): string | undefined {
  const parts = birthdayParts(value)
  if (parts === undefined || parts.day === 0) return undefined
  // by hand: luxon's formatter costs microseconds, and the year is known to have 4 digits
  return String(parts.year) + twoDigits(parts.month) + twoDigits(parts.day)
}

/* ------------------------------------------------------------------------------------------ */
/* Hashed keys, memoised: repeated users cost a Map lookup instead of a parse and a SHA-256    */
/* ------------------------------------------------------------------------------------------ */

// '' in a memo means "normalises to nothing": it is remembered too, so junk is not re-parsed.
// Capacities are per generation and add up to 50k: the last ~11k users' keys at least, ~100k
// entries at most. Only names and cities share a memo: they are the only keys normalised the
// same way. Keys that depend on the country remember the region they were computed for, so the
// same text in another country is computed again.
// Bytes (issue 14): the memos share MEMO_BUDGET_BYTES (32 MiB, src/facebook/memo.ts) with the
// trait-name memo, each in proportion to its capacity × the counted size of a typical entry
// (its value's estimate + a ~32-character key at 2 bytes a character). Entries larger than
// typical make a memo turn over early; keys over MEMO_MAX_KEY_LENGTH are never kept.
const MEMO_SHAPES = {
  // [entries per generation, estimated bytes of a value and its Map entry]: a 64-hex string is
  // ~80 bytes; {region, hashed}; two or four hashes
  email: [11_000, 128],
  phone: [11_000, 160],
  externalId: [11_000, 128],
  text: [8_000, 128],
  fullName: [5_000, 224],
  birthday: [2_000, 384],
  zip: [1_500, 160],
  state: [300, 160],
  country: [150, 160],
  gender: [50, 128]
} as const satisfies Record<string, readonly [number, number]>
const TYPICAL_KEY_BYTES = 64
const MATCH_KEY_MEMO_BYTES = MEMO_BUDGET_BYTES - TRAIT_NAME_MEMO_BYTES
const MEMO_WEIGHTS = Object.values(MEMO_SHAPES)
  .reduce((total, [capacity, valueBytes]) => total + capacity * (valueBytes + TYPICAL_KEY_BYTES), 0)
const memos: Array<Memo<unknown>> = []

function memo<V> (name: keyof typeof MEMO_SHAPES): Memo<V> {
  const [capacity, valueBytes] = MEMO_SHAPES[name]
  const maxBytes = Math.floor(MATCH_KEY_MEMO_BYTES * capacity * (valueBytes + TYPICAL_KEY_BYTES) / MEMO_WEIGHTS)
  const created = new Memo<V>(capacity, { maxBytes, valueBytes })
  memos.push(created as Memo<unknown>)
  return created
}

const emailMemo = memo<string>('email')
const phoneMemo = memo<InRegion>('phone')
const externalIdMemo = memo<string>('externalId')
const textMemo = memo<string>('text')
const fullNameMemo = memo<FullNameKeys>('fullName')
const birthdayMemo = memo<BirthdayKeys>('birthday')
const zipMemo = memo<InRegion>('zip')
const stateMemo = memo<InRegion>('state')
const countryMemo = memo<CountryKeys>('country')
const genderMemo = memo<string>('gender')

/** Forgets every remembered hash (tests and benchmarks measure the cold path with it). */
export function clearMatchKeyCache (): void {
  for (const memo of memos) memo.clear()
}

/** The bytes the match-key memos count now, and at most (tests and benchmarks). */
export function matchKeyMemoBytes (): { bytes: number, maxBytes: number } {
  let bytes = 0
  let maxBytes = 0
  for (const memo of memos) {
    bytes += memo.bytes
    maxBytes += memo.maxBytes
  }
  return { bytes, maxBytes }
}

interface FullNameKeys { fn: string, ln: string }
interface InRegion { region: string, hashed: string }
interface BirthdayKeys { db: string, doby: string, dobm: string, dobd: string }
interface CountryKeys { region: string, country: string }

/** A trait value as a memo key: strings as sent, numbers as text; anything else has none. */
function memoKey (value: unknown): string | undefined {
  if (typeof value === 'string') return value
  if (typeof value === 'number' && Number.isFinite(value)) return String(value)
  return undefined
}

const MAX_HASH_PADDING = 16

/** The pre-hashed value (lower-cased) when the trait is one: spec, "passed through". */
function preHashed (value: unknown): string | undefined {
  if (typeof value !== 'string') return undefined
  // only a value of 64 characters around its spaces can be a hash: nothing longer is trimmed
  if (value.length !== 64 && (value.length < 64 || value.length > 64 + MAX_HASH_PADDING)) return undefined
  const text = value.length === 64 ? value : value.trim()
  return isSha256Hex(text) ? text.toLowerCase() : undefined
}

function hashOrEmpty (normalised: string | undefined): string {
  return normalised === undefined ? '' : sha256(normalised)
}

function hashedWith (memo: Memo<string>, value: unknown, normalise: (value: unknown) => string | undefined): string | undefined {
  const key = memoKey(value)
  if (key === undefined) return undefined
  let hashed = memo.get(key)
  if (hashed === undefined) {
    hashed = preHashed(key) ?? hashOrEmpty(normalise(key))
    memo.set(key, hashed)
  }
  return hashed === '' ? undefined : hashed
}

// Keys that depend on the country (phone, zip, state): an entry is good for its region only
function hashedInRegion (
  memo: Memo<InRegion>, value: unknown, region: string, normalise: (value: unknown, region: string) => string | undefined
): string | undefined {
  const text = memoKey(value)
  if (text === undefined) return undefined
  let entry = memo.get(text)
  if (entry === undefined || entry.region !== region) {
    // numbers go to the normaliser as numbers: a numeric US zip gets its zeros back
    entry = { region, hashed: preHashed(text) ?? hashOrEmpty(normalise(value, region)) }
    memo.set(text, entry)
  }
  return entry.hashed === '' ? undefined : entry.hashed
}

const NO_COUNTRY: CountryKeys = { region: ABSENT, country: '' }

function countryKeys (value: unknown): CountryKeys {
  const key = memoKey(value)
  if (key === undefined) return NO_COUNTRY
  let keys = countryMemo.get(key)
  if (keys === undefined) {
    const hashed = preHashed(key)
    if (hashed !== undefined) {
      keys = { region: ABSENT, country: hashed }
    } else {
      const region = regionOf(key)
      keys = { region, country: region.length === 2 ? sha256(region) : '' }
    }
    countryMemo.set(key, keys)
  }
  return keys
}

const NO_FULL_NAME: FullNameKeys = { fn: '', ln: '' }

// spec: first word of `name` → fn, last word → ln (a one-word name gives fn only)
function fullNameKeys (value: unknown): FullNameKeys {
  if (typeof value !== 'string') return NO_FULL_NAME
  let keys = fullNameMemo.get(value)
  if (keys === undefined) {
    const text = asText(value, MAX_NAME_LENGTH)
    const words = text === undefined ? [] : text.split(WHITESPACE)
    keys = words.length === 0
      ? NO_FULL_NAME
      : {
          fn: hashOrEmpty(normalizeName(words[0])),
          ln: words.length > 1 ? hashOrEmpty(normalizeName(words[words.length - 1])) : ''
        }
    fullNameMemo.set(value, keys)
  }
  return keys
}

const NO_BIRTHDAY: BirthdayKeys = { db: '', doby: '', dobm: '', dobd: '' }

function birthdayKeys (value: unknown): BirthdayKeys {
  const key = memoKey(value)
  if (key === undefined) return value instanceof Date ? computeBirthdayKeys(value) : NO_BIRTHDAY
  let keys = birthdayMemo.get(key)
  if (keys === undefined) {
    keys = computeBirthdayKeys(key)
    birthdayMemo.set(key, keys)
  }
  return keys
}

function computeBirthdayKeys (value: unknown): BirthdayKeys {
  const hashed = preHashed(value)
  // a pre-hashed birthday cannot be split into the legacy year/month/day parts
  if (hashed !== undefined) return { db: hashed, doby: '', dobm: '', dobd: '' }
  const parts = birthdayParts(value)
  if (parts === undefined) return NO_BIRTHDAY
  const year = String(parts.year)
  // spec: a year alone (or with a month) is not a birthday: no `db`, and no month or day made
  // up; the legacy format, which takes the parts one by one, gets the year
  if (parts.day === 0) return { db: '', doby: sha256(year), dobm: '', dobd: '' }
  const month = twoDigits(parts.month)
  const day = twoDigits(parts.day)
  return { db: sha256(year + month + day), doby: sha256(year), dobm: sha256(month), dobd: sha256(day) }
}

function hashedEmail (value: unknown): string | undefined {
  return hashedWith(emailMemo, value, normalizeEmail)
}

function hashedPhone (value: unknown, region: string): string | undefined {
  return hashedInRegion(phoneMemo, value, region, normalizePhoneIn)
}

// Beyond this many values a list is de-duplicated with a Set: `includes` on a hostile list of
// thousands of distinct emails would take quadratic time
const SHORT_LIST = 16

// spec: email and phone may be lists; duplicates are sent once
function hashedList (value: unknown, region: string, hashedOne: (value: unknown, region: string) => string | undefined): string[] | undefined {
  if (!Array.isArray(value)) {
    const hashed = hashedOne(value, region)
    return hashed === undefined ? undefined : [hashed]
  }
  let list: string[] | undefined
  let seen: Set<string> | undefined
  for (const one of value) {
    const hashed = hashedOne(one, region)
    if (hashed === undefined) continue
    if (list === undefined) {
      list = [hashed]
    } else if (seen !== undefined) {
      if (seen.has(hashed)) continue
      seen.add(hashed)
      list.push(hashed)
    } else if (!list.includes(hashed)) {
      list.push(hashed)
      if (list.length > SHORT_LIST) seen = new Set(list)
    }
  }
  return list
}

// Other spellings of match-key traits (`mobile`, `zip`, `first_name`…) as a flat list of trait,
// value, trait, value… in the order they came: rare, and read only for keys still missing.
type Aliases = unknown[]

/** The first value spelling `trait` in `aliases` that `hash` gives a key for. */
function fromAliases<K> (aliases: Aliases, trait: MatchKeyTrait, region: string, hash: (value: unknown, region: string) => K | undefined): K | undefined {
  for (let i = 0; i < aliases.length; i += 2) {
    if (aliases[i] !== trait) continue
    const key = hash(aliases[i + 1], region)
    if (key !== undefined) return key
  }
  return undefined
}

/** The region of the first country given (ABSENT when none): one that gave no country key. */
function givenRegion (country: unknown, aliases: Aliases | undefined): string {
  const region = country === undefined ? ABSENT : countryKeys(country).region
  if (region !== ABSENT || aliases === undefined) return region
  for (let i = 0; i < aliases.length; i += 2) {
    if (aliases[i] !== 'address.country') continue
    const region = countryKeys(aliases[i + 1]).region
    if (region !== ABSENT) return region
  }
  return ABSENT
}

function someCountry (value: unknown): CountryKeys | undefined {
  const keys = countryKeys(value)
  return keys.country === '' ? undefined : keys
}

function someFullName (value: unknown): FullNameKeys | undefined {
  const keys = fullNameKeys(value)
  return keys.fn === '' && keys.ln === '' ? undefined : keys
}

function someBirthday (value: unknown): BirthdayKeys | undefined {
  const keys = birthdayKeys(value)
  return keys.db === '' && keys.doby === '' ? undefined : keys
}

function hashedGender (value: unknown): string | undefined {
  return hashedWith(genderMemo, value, normalizeGender)
}

function hashedName (value: unknown): string | undefined {
  return hashedWith(textMemo, value, normalizeName)
}

function hashedCity (value: unknown): string | undefined {
  return hashedWith(textMemo, value, normalizeCity)
}

function hashedState (value: unknown, region: string): string | undefined {
  return hashedInRegion(stateMemo, value, region, normalizeStateIn)
}

function hashedZip (value: unknown, region: string): string | undefined {
  return hashedInRegion(zipMemo, value, region, normalizeZipIn)
}

function hashedEmails (value: unknown, region: string): string[] | undefined {
  return hashedList(value, region, hashedEmail)
}

function hashedPhones (value: unknown, region: string): string[] | undefined {
  return hashedList(value, region, hashedPhone)
}

/**
 * Hashed match keys from Segment traits (`context.traits` of a track, `traits` of an identify).
 * This is also what a profile keeps, so it never holds a raw value, nor external_id/lead_id.
 * Every spelling of a match-key trait counts (src/facebook/trait-spellings.ts): the canonical
 * one wins, another spelling fills a key the canonical one does not give (absent, or junk);
 * `address.zip` and top-level `city`/`state`/`zip`/`country` fill the address's parts. Traits
 * are read from own properties only. Always a new object: callers may add to it.
 */
export function hashedTraitKeys (traits: Record<string, unknown> | undefined): MatchKeys {
  const keys: MatchKeys = {}
  if (!isRecord(traits)) return keys
  let email: unknown
  let phone: unknown
  let firstName: unknown
  let lastName: unknown
  let name: unknown
  let gender: unknown
  let birthday: unknown
  let address: unknown
  let aliases: Aliases | undefined
  for (const traitName in traits) {
    const trait = matchKeyTraitOf(traitName)
    if (trait === undefined || !Object.hasOwn(traits, traitName)) continue
    const value = traits[traitName]
    if (value === undefined || value === null) continue
    if (traitName !== trait) {
      (aliases ??= []).push(trait, value)
      continue
    }
    switch (trait) {
      case 'email': email = value; break
      case 'phone': phone = value; break
      case 'firstName': firstName = value; break
      case 'lastName': lastName = value; break
      case 'name': name = value; break
      case 'gender': gender = value; break
      case 'birthday': birthday = value; break
      case 'address': address = value; break
    }
  }
  let city: unknown
  let state: unknown
  let postalCode: unknown
  let country: unknown
  if (isRecord(address)) {
    let addressAliases: Aliases | undefined
    for (const partName in address) {
      const trait = matchKeyTraitOf(partName)
      const part = trait === undefined ? undefined : addressPartOf(trait)
      if (part === undefined || !Object.hasOwn(address, partName)) continue
      const value = address[partName]
      if (value === undefined || value === null) continue
      if (partName !== part) {
        (addressAliases ??= []).push(trait, value)
        continue
      }
      switch (part) {
        case 'city': city = value; break
        case 'state': state = value; break
        case 'postalCode': postalCode = value; break
        case 'country': country = value; break
      }
    }
    // the address's own other spellings (`address.zip`) come before top-level ones (`zip`)
    if (addressAliases !== undefined) aliases = aliases === undefined ? addressAliases : addressAliases.concat(aliases)
  }

  // the address's country, else another spelling of it, drives phone, state and zip
  let countryKey = country === undefined ? undefined : someCountry(country)
  if (countryKey === undefined && aliases !== undefined) countryKey = fromAliases(aliases, 'address.country', ABSENT, someCountry)
  // a country given but not recognised is not the US: its region is UNKNOWN
  const region = countryKey?.region ?? givenRegion(country, aliases)

  let em = email === undefined ? undefined : hashedEmails(email, region)
  if (em === undefined && aliases !== undefined) em = fromAliases(aliases, 'email', region, hashedEmails)
  if (em !== undefined) keys.em = em
  let ph = phone === undefined ? undefined : hashedPhones(phone, region)
  if (ph === undefined && aliases !== undefined) ph = fromAliases(aliases, 'phone', region, hashedPhones)
  if (ph !== undefined) keys.ph = ph
  let ge = gender === undefined ? undefined : hashedGender(gender)
  if (ge === undefined && aliases !== undefined) ge = fromAliases(aliases, 'gender', region, hashedGender)
  if (ge !== undefined) keys.ge = ge

  let fn = firstName === undefined ? undefined : hashedName(firstName)
  if (fn === undefined && aliases !== undefined) fn = fromAliases(aliases, 'firstName', region, hashedName)
  let ln = lastName === undefined ? undefined : hashedName(lastName)
  if (ln === undefined && aliases !== undefined) ln = fromAliases(aliases, 'lastName', region, hashedName)
  if (fn === undefined || ln === undefined) {
    // spec: first word of `name` → fn, last word → ln
    let fullName = name === undefined ? undefined : someFullName(name)
    if (fullName === undefined && aliases !== undefined) fullName = fromAliases(aliases, 'name', region, someFullName)
    if (fullName !== undefined) {
      if (fn === undefined && fullName.fn !== '') fn = fullName.fn
      if (ln === undefined && fullName.ln !== '') ln = fullName.ln
    }
  }
  if (fn !== undefined) keys.fn = fn
  if (ln !== undefined) keys.ln = ln

  let ct = city === undefined ? undefined : hashedCity(city)
  if (ct === undefined && aliases !== undefined) ct = fromAliases(aliases, 'address.city', region, hashedCity)
  if (ct !== undefined) keys.ct = ct
  let st = state === undefined ? undefined : hashedState(state, region)
  if (st === undefined && aliases !== undefined) st = fromAliases(aliases, 'address.state', region, hashedState)
  if (st !== undefined) keys.st = st
  let zp = postalCode === undefined ? undefined : hashedZip(postalCode, region)
  if (zp === undefined && aliases !== undefined) zp = fromAliases(aliases, 'address.postalCode', region, hashedZip)
  if (zp !== undefined) keys.zp = zp
  if (countryKey !== undefined) keys.country = countryKey.country

  let dob = birthday === undefined ? undefined : someBirthday(birthday)
  if (dob === undefined && aliases !== undefined) dob = fromAliases(aliases, 'birthday', region, someBirthday)
  if (dob !== undefined) {
    if (dob.db !== '') keys.db = dob.db
    // spec: a year alone has doby only (the legacy format takes the parts one by one)
    if (dob.doby !== '') keys.doby = dob.doby
    if (dob.dobm !== '') keys.dobm = dob.dobm
    if (dob.dobd !== '') keys.dobd = dob.dobd
  }
  return keys
}

/** SHA-256 of a userId for the Conversions API's `external_id` (memoised: users repeat). */
export function hashedExternalId (userId: string): string {
  let hashed = externalIdMemo.get(userId)
  if (hashed === undefined) {
    hashed = sha256Hex(userId)
    externalIdMemo.set(userId, hashed)
  }
  return hashed
}

// Single-valued keys, in the order Meta's tables list them; the birthday parts go with `db`
const SINGLE_KEYS = ['ge', 'fn', 'ln', 'ct', 'st', 'zp', 'country', 'external_id', 'lead_id'] as const
const ALL_KEYS: ReadonlyArray<keyof MatchKeys> = ['em', 'ph', ...SINGLE_KEYS, 'db', 'doby', 'dobm', 'dobd']

/**
 * Fills, in place, the keys `target` lacks from `fallback` (message values win, the profile
 * fills the gaps). The transform's hot path uses it on the keys it just built.
 */
export function fillMatchKeys (target: MatchKeys, fallback: MatchKeys): MatchKeys {
  if (target.em === undefined || target.em.length === 0) {
    if (fallback.em !== undefined && fallback.em.length > 0) target.em = fallback.em
    else delete target.em
  }
  if (target.ph === undefined || target.ph.length === 0) {
    if (fallback.ph !== undefined && fallback.ph.length > 0) target.ph = fallback.ph
    else delete target.ph
  }
  for (const name of SINGLE_KEYS) {
    if (target[name] === undefined) {
      const value = fallback[name]
      if (value !== undefined) target[name] = value
    }
  }
  // the birthday and its legacy parts travel together, so they never mix two dates: a whole
  // date from the profile replaces a year sent alone (a doby without db, and no month or day)
  if (target.db === undefined && fallback.db !== undefined) {
    target.db = fallback.db
    if (fallback.doby !== undefined) target.doby = fallback.doby
    if (fallback.dobm !== undefined) target.dobm = fallback.dobm
    if (fallback.dobd !== undefined) target.dobd = fallback.dobd
  }
  return target
}

/** Message values win; the profile (fallback) fills the keys the message does not have. */
export function mergeMatchKeys (primary: MatchKeys, fallback?: MatchKeys): MatchKeys {
  if (fallback === undefined) return primary
  const merged: MatchKeys = {}
  for (const name of ALL_KEYS) {
    const value = primary[name]
    if (value !== undefined) (merged as Record<string, unknown>)[name] = value
  }
  return fillMatchKeys(merged, fallback)
}

/** Whether there is no customer information at all (rejected as `no_match_key`). */
export function hasNoMatchKey (keys: MatchKeys): boolean {
  return (keys.em === undefined || keys.em.length === 0) &&
    (keys.ph === undefined || keys.ph.length === 0) &&
    SINGLE_KEYS.every((name) => keys[name] === undefined) &&
    keys.db === undefined
}

// Meta (Marketing API v13+): customer information that is only a subset of one of these is
// rejected. A user id or a lead id makes any set strong enough (spec/facebook.md).
const WEAK_COMBINATIONS: ReadonlyArray<ReadonlySet<string>> = [
  new Set(['ct', 'country', 'st', 'zp', 'ge']),
  new Set(['db']),
  new Set(['fn', 'ge']),
  new Set(['ln', 'ge'])
]
const WEAK_CANDIDATE_KEYS = ['ge', 'fn', 'ln', 'ct', 'st', 'zp', 'country', 'db'] as const

/**
 * Whether these keys are too weak for Meta: a subset of `ct+country+st+zp+ge`, `db`, `fn+ge` or
 * `ln+ge`. The empty set is a subset of all of them (the transform reports it as no_match_key).
 */
export function isTooWeak (keys: MatchKeys): boolean {
  if ((keys.em !== undefined && keys.em.length > 0) || (keys.ph !== undefined && keys.ph.length > 0) ||
    keys.external_id !== undefined || keys.lead_id !== undefined) {
    return false
  }
  return WEAK_COMBINATIONS.some((combination) =>
    WEAK_CANDIDATE_KEYS.every((name) => keys[name] === undefined || combination.has(name)))
}
