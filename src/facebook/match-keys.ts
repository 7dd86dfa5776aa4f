// Customer information ("match keys") for Meta: normalisation and SHA-256 hashing of Segment
// traits, following the match-key table of spec/facebook.md and Meta's customer information
// parameters page (reference/meta-graph-api-notes.md §2).
import * as crypto from 'node:crypto'
import countries from 'i18n-iso-countries'
import { isSupportedCountry, parsePhoneNumberFromString, type CountryCode } from 'libphonenumber-js'
import { DateTime } from 'luxon'
import { Memo } from './memo.js'
import { US_STATE_CODES } from './us-states.js'

/**
 * Match keys in canonical form: every PII key is already hashed (64 lower-case hex).
 * `external_id` is the raw trimmed userId (the legacy format sends it as is, the Conversions API
 * serializer hashes it) and `lead_id` the raw Lead Ads id; neither is kept in profiles.
 * `doby`/`dobm`/`dobd` are the hashed parts of `db` the legacy format sends.
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

/** A trait value as trimmed text; numbers count (phones and zips are often sent as numbers). */
function asText (value: unknown): string | undefined {
  if (typeof value === 'string') {
    const text = value.trim()
    return text === '' ? undefined : text
  }
  if (typeof value === 'number' && Number.isFinite(value)) return String(value)
  return undefined
}

function isRecord (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/* ------------------------------------------------------------------------------------------ */
/* Normalisers: each returns the string Meta wants hashed, or undefined when there is none     */
/* ------------------------------------------------------------------------------------------ */

/** Meta: trim, lower-case. */
export function normalizeEmail (value: unknown): string | undefined {
  return asText(value)?.toLowerCase().normalize('NFC')
}

/** Lower-case, NFC, letters and digits of any script only: names, cities, states. */
function lettersAndDigits (value: unknown): string | undefined {
  const text = asText(value)
  if (text === undefined) return undefined
  // marks are kept, so stripping before composing gives the same letters
  const normalised = text.toLowerCase().replace(NOT_LETTER_OR_DIGIT, '').normalize('NFC')
  return normalised === '' ? undefined : normalised
}

/** Meta `fn`/`ln`: lower-case, no punctuation, no spaces; other scripts allowed (UTF-8). */
export function normalizeName (value: unknown): string | undefined {
  return lettersAndDigits(value)
}

/** Meta `ct`: lower-case, no punctuation, no special characters, no spaces. */
export function normalizeCity (value: unknown): string | undefined {
  return lettersAndDigits(value)
}

const GENDERS: ReadonlyMap<string, string> = new Map([
  ['m', 'm'],
  ['male', 'm'],
  ['f', 'f'],
  ['female', 'f']
])

/** spec: `m`/`male` → `m`, `f`/`female` → `f` (any case); anything else is not sent. */
export function normalizeGender (value: unknown): string | undefined {
  const text = asText(value)
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

/** Meta `country`: ISO 3166-1 alpha-2, lower-case (`USA`, `United States`, `us` → `us`). */
export function normalizeCountry (value: unknown): string | undefined {
  const text = asText(value)
  if (text === undefined) return undefined
  const folded = foldName(text)
  return countryCode(text) ?? countryCode(folded) ?? countryNameIndex().get(folded)
}

// The country a trait set speaks of, for the rules that depend on it: a code, ABSENT when no
// country was given, UNKNOWN when one was given that we could not recognise.
const ABSENT = ''
const UNKNOWN = '?'

function regionOf (country: unknown): string {
  if (asText(country) === undefined) return ABSENT
  return normalizeCountry(country) ?? UNKNOWN
}

function normalizeStateIn (value: unknown, region: string): string | undefined {
  const state = lettersAndDigits(value)
  if (state === undefined) return undefined
  // spec: US state names → 2-letter code when the country is the US or absent
  if (region === 'us' || region === ABSENT) return US_STATE_CODES.get(state) ?? state
  return state
}

/**
 * Meta `st`: US state names become their 2-letter code (when the country is the US or absent);
 * lower-case, no punctuation or spaces.
 */
export function normalizeState (value: unknown, country?: string): string | undefined {
  return normalizeStateIn(value, regionOf(country))
}

function normalizeZipIn (value: unknown, region: string): string | undefined {
  const text = asText(value)
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

function normalizePhoneIn (value: unknown, region: string): string | undefined {
  const text = asText(value)
  if (text === undefined) return undefined
  const nanp = NANP_NUMBER.exec(text)
  if (nanp !== null && (nanp[1] === '+1' || NANP_REGIONS.has(region))) {
    return '1' + (nanp[2] ?? nanp[3]) + nanp[4] + nanp[5]
  }
  const defaultCountry = region.length === 2 && isSupportedCountry(region.toUpperCase())
    ? region.toUpperCase() as CountryCode
    : undefined
  // spec: keep the parsed form even where the library calls the number not valid (the seed's
  // own 401-123-4567 is not), as long as it has a possible length
  const parsed = parsePhoneNumberFromString(text, defaultCountry)
  if (parsed?.isPossible() === true) return parsed.number.slice(1)
  // cannot be parsed: digits only, leading zeros removed (Meta's own normaliser)
  const digits = text.replace(NOT_DIGIT, '').replace(LEADING_ZEROS, '')
  return digits === '' ? undefined : digits
}

/**
 * Meta `ph`: E.164 digits without `+`, parsed with `countryHint` (the address country) as the
 * default region, so US `4011234567` → `14011234567`.
 */
export function normalizePhone (value: unknown, countryHint?: string): string | undefined {
  return normalizePhoneIn(value, regionOf(countryHint))
}

// Birthdays as people send them, tried in order; day-first forms are left out on purpose:
// `2/3/1990` is read the US way, as Meta's own example `2/16/1997` is
const BIRTHDAY_FORMATS = ['M/d/yyyy', 'yyyy/M/d', 'yyyy.M.d', 'd.M.yyyy']
const EARLIEST_BIRTH_YEAR = 1900

function birthdayDate (value: unknown): DateTime | undefined {
  if (value instanceof Date) {
    const date = DateTime.fromJSDate(value, { zone: 'utc' })
    return date.isValid ? date : undefined
  }
  const text = asText(value)
  if (text === undefined) return undefined
  if (EIGHT_DIGITS.test(text)) {
    const date = DateTime.fromFormat(text, 'yyyyMMdd', { zone: 'utc' })
    return date.isValid ? date : undefined
  }
  // an ISO date or date-time: the calendar date as written, whatever its offset
  const iso = DateTime.fromISO(text, { setZone: true })
  if (iso.isValid) return iso
  for (const format of BIRTHDAY_FORMATS) {
    const date = DateTime.fromFormat(text, format, { zone: 'utc' })
    if (date.isValid) return date
  }
  return undefined
}

/** Meta `db`: `YYYYMMDD`, year from 1900 to this year (Meta: "1900 to current year"). */
export function normalizeBirthday (value: unknown): string | undefined {
  const date = birthdayDate(value)
  if (date === undefined) return undefined
  if (date.year < EARLIEST_BIRTH_YEAR || date.year > DateTime.utc().year) return undefined
  // by hand: luxon's formatter costs microseconds, and the year is known to have 4 digits
  return String(date.year) + (date.month < 10 ? '0' : '') + String(date.month) + (date.day < 10 ? '0' : '') + String(date.day)
}

/* ------------------------------------------------------------------------------------------ */
/* Hashed keys, memoised: repeated users cost a Map lookup instead of a parse and a SHA-256    */
/* ------------------------------------------------------------------------------------------ */

// '' in a memo means "normalises to nothing": it is remembered too, so junk is not re-parsed.
// Capacities are per generation and add up to 50k: the last ~11k users' keys at least, ~100k
// entries (~20 MB) at most. Only names and cities share a memo: they are the only keys
// normalised the same way. Keys that depend on the country remember the region they were
// computed for, so the same text in another country is computed again.
const emailMemo = new Memo<string>(11_000)
const phoneMemo = new Memo<InRegion>(11_000)
const externalIdMemo = new Memo<string>(11_000)
const textMemo = new Memo<string>(8_000)
const fullNameMemo = new Memo<FullNameKeys>(5_000)
const birthdayMemo = new Memo<BirthdayKeys>(2_000)
const zipMemo = new Memo<InRegion>(1_500)
const stateMemo = new Memo<InRegion>(300)
const countryMemo = new Memo<CountryKeys>(150)
const genderMemo = new Memo<string>(50)
const memos: ReadonlyArray<Memo<unknown>> = [
  emailMemo, phoneMemo, externalIdMemo, textMemo, fullNameMemo, birthdayMemo, zipMemo, stateMemo,
  countryMemo, genderMemo
]

/** Forgets every remembered hash (tests and benchmarks measure the cold path with it). */
export function clearMatchKeyCache (): void {
  for (const memo of memos) memo.clear()
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

/** The pre-hashed value (lower-cased) when the trait is one: spec, "passed through". */
function preHashed (value: unknown): string | undefined {
  if (typeof value !== 'string') return undefined
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

function countryKeys (value: unknown): CountryKeys {
  const key = memoKey(value)
  if (key === undefined) return { region: ABSENT, country: '' }
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
    const words = value.trim().split(WHITESPACE)
    keys = {
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
  const date = normalizeBirthday(value)
  if (date === undefined) return NO_BIRTHDAY
  return {
    db: sha256(date),
    doby: sha256(date.slice(0, 4)),
    dobm: sha256(date.slice(4, 6)),
    dobd: sha256(date.slice(6, 8))
  }
}

function hashedEmail (value: unknown): string | undefined {
  return hashedWith(emailMemo, value, normalizeEmail)
}

function hashedPhone (value: unknown, region: string): string | undefined {
  return hashedInRegion(phoneMemo, value, region, normalizePhoneIn)
}

// spec: email and phone may be lists; duplicates are sent once
function hashedList (value: unknown, region: string, hashedOne: (value: unknown, region: string) => string | undefined): string[] | undefined {
  if (Array.isArray(value)) {
    let list: string[] | undefined
    for (const one of value) {
      const hashed = hashedOne(one, region)
      if (hashed === undefined) continue
      if (list === undefined) list = [hashed]
      else if (!list.includes(hashed)) list.push(hashed)
    }
    return list
  }
  const hashed = hashedOne(value, region)
  return hashed === undefined ? undefined : [hashed]
}

/**
 * Hashed match keys from Segment traits (`context.traits` of a track, `traits` of an identify).
 * This is also what a profile keeps, so it never holds a raw value, nor external_id/lead_id.
 * Always a new object: callers may add to it.
 */
export function hashedTraitKeys (traits: Record<string, unknown> | undefined): MatchKeys {
  const keys: MatchKeys = {}
  if (!isRecord(traits)) return keys
  const address = isRecord(traits.address) ? traits.address : undefined
  const { region, country } = countryKeys(address?.country)

  const em = hashedList(traits.email, region, hashedEmail)
  if (em !== undefined) keys.em = em
  const ph = hashedList(traits.phone, region, hashedPhone)
  if (ph !== undefined) keys.ph = ph
  const ge = hashedWith(genderMemo, traits.gender, normalizeGender)
  if (ge !== undefined) keys.ge = ge

  const fn = hashedWith(textMemo, traits.firstName, normalizeName)
  const ln = hashedWith(textMemo, traits.lastName, normalizeName)
  const fullName = fn === undefined || ln === undefined ? fullNameKeys(traits.name) : NO_FULL_NAME
  if (fn !== undefined) keys.fn = fn
  else if (fullName.fn !== '') keys.fn = fullName.fn
  if (ln !== undefined) keys.ln = ln
  else if (fullName.ln !== '') keys.ln = fullName.ln

  if (address !== undefined) {
    const ct = hashedWith(textMemo, address.city, normalizeCity)
    if (ct !== undefined) keys.ct = ct
    const st = hashedInRegion(stateMemo, address.state, region, normalizeStateIn)
    if (st !== undefined) keys.st = st
    const zp = hashedInRegion(zipMemo, address.postalCode, region, normalizeZipIn)
    if (zp !== undefined) keys.zp = zp
    if (country !== '') keys.country = country
  }

  if (traits.birthday !== undefined && traits.birthday !== null) {
    const birthday = birthdayKeys(traits.birthday)
    if (birthday.db !== '') {
      keys.db = birthday.db
      if (birthday.doby !== '') {
        keys.doby = birthday.doby
        keys.dobm = birthday.dobm
        keys.dobd = birthday.dobd
      }
    }
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
  // the birthday and its legacy parts travel together, so they never mix two dates
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
