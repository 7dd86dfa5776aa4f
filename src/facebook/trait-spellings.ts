/**
 * Spellings of match-key traits (issue 14). Segment's spec names the traits `email`, `phone`,
 * `firstName`, `lastName`, `name`, `gender`, `birthday` and `address` ({city, state, postalCode,
 * country}); real sources also send `phone_number`, `mobile`, `first_name`, `zip` at the top
 * level, Mixpanel-style `$email`, Mailchimp's `FNAME`… They are the same PII: they are hashed as
 * the key they spell (`mobile` → `ph`), never stored raw in a profile, never an audience key, and
 * never copied into `custom_data`.
 *
 * A trait name is matched ignoring case and the separators `_`, `-`, `.`, space and `$`:
 * `Phone_Number`, `phone-number` and `phoneNumber` are one spelling. Left out on purpose: words
 * too generic to be PII as a trait (`mail` is as often an opt-in flag, `region` a sales region,
 * `town`, `display_name`, `user`). `state` is in: in identify traits it is the address's state
 * far more often than a lifecycle state, and hashing a lifecycle state only sends Meta a key that
 * matches nobody.
 *
 * Pure, and own-property safe: lookups go through Maps, so `constructor`, `__proto__` or
 * `toString` are nothing but names.
 */
import { Memo } from './memo.js'

/** The Segment trait a spelling stands for; address parts are named by their path. */
export type MatchKeyTrait =
  | 'email'
  | 'phone'
  | 'firstName'
  | 'lastName'
  | 'name'
  | 'gender'
  | 'birthday'
  | 'address'
  | 'address.city'
  | 'address.state'
  | 'address.postalCode'
  | 'address.country'

/** The canonical Segment trait names of the match keys (spec/facebook.md's table). */
export const CANONICAL_MATCH_KEY_TRAITS = ['email', 'phone', 'firstName', 'lastName', 'name', 'gender', 'birthday', 'address'] as const

// Every spelling, folded (see foldTraitName), by the trait it spells. Camel-case and separated
// forms fold to the same word, so `first_name`, `firstName` and `First Name` need one entry.
const SPELLINGS: ReadonlyArray<readonly [MatchKeyTrait, readonly string[]]> = [
  ['email', ['email', 'emailaddress', 'useremail']],
  ['phone', [
    'phone', 'phonenumber', 'phoneno', 'mobile', 'mobilephone', 'mobilenumber', 'mobileno', 'cell', 'cellphone',
    'cellnumber', 'telephone', 'telephonenumber', 'tel', 'userphone'
  ]],
  ['firstName', ['firstname', 'givenname', 'fname', 'forename']],
  ['lastName', ['lastname', 'surname', 'familyname', 'lname']],
  ['name', ['name', 'fullname']],
  ['gender', ['gender', 'sex']],
  ['birthday', ['birthday', 'dob', 'birthdate', 'dateofbirth']],
  ['address', ['address']],
  ['address.city', ['city', 'addresscity']],
  ['address.state', ['state', 'statecode', 'province', 'addressstate']],
  ['address.postalCode', ['zip', 'zipcode', 'postalcode', 'postcode', 'addresspostalcode', 'addresszip']],
  ['address.country', ['country', 'countrycode', 'countryname', 'addresscountry']]
]

const BY_FOLDED: ReadonlyMap<string, MatchKeyTrait> = new Map(
  SPELLINGS.flatMap(([trait, spellings]) => spellings.map((spelling) => [spelling, trait] as const))
)

// The longest folded spelling: a longer name is none, whatever it holds (and is not folded).
const LONGEST_SPELLING = Math.max(...[...BY_FOLDED.keys()].map((spelling) => spelling.length))
// A little slack for separators (`date_of_birth`, `$phone_number`)
const MAX_NAME_LENGTH = 2 * LONGEST_SPELLING

const SEPARATORS = /[\s_.$-]+/g

/** A trait name as spellings are compared: lower-case, without `_`, `-`, `.`, spaces or `$`. */
export function foldTraitName (name: string): string {
  return name.toLowerCase().replace(SEPARATORS, '')
}

// Trait names repeat on every event (a source's schema): the answer for each name seen is kept,
// so the hot path costs a Map lookup per trait instead of a fold. '' means "no spelling".
const NOT_A_SPELLING = ''
/** The bytes of the memo of trait names, out of MEMO_BUDGET_BYTES (src/facebook/memo.ts). */
export const TRAIT_NAME_MEMO_BYTES = 512 * 1024
const byName = new Memo<MatchKeyTrait | typeof NOT_A_SPELLING>(2_000, { maxBytes: TRAIT_NAME_MEMO_BYTES, valueBytes: 48 })

/**
 * The match-key trait `name` spells (`Phone_Number`, `mobile` → `phone`; `zip` →
 * `address.postalCode`; `email` → `email`), or undefined for any other trait.
 */
export function matchKeyTraitOf (name: string): MatchKeyTrait | undefined {
  let trait = byName.get(name)
  if (trait === undefined) {
    trait = (name.length <= MAX_NAME_LENGTH ? BY_FOLDED.get(foldTraitName(name)) : undefined) ?? NOT_A_SPELLING
    byName.set(name, trait)
  }
  return trait === NOT_A_SPELLING ? undefined : trait
}

/**
 * Whether a trait (or property) of this name is a match key: a canonical Segment trait name
 * (`email`, `phone`, `firstName`, `lastName`, `name`, `gender`, `birthday`, `address`) or any
 * spelling of one (`phone_number`, `mobile`, `zip`, `dob`, `country`…). Such a value is PII:
 * it is kept only hashed, and never sent raw (e.g. in `custom_data`).
 */
export function isMatchKeyTrait (name: string): boolean {
  return matchKeyTraitOf(name) !== undefined
}

/** The address part a spelling stands for (`zip` → `postalCode`), for reading `address`. */
export function addressPartOf (trait: MatchKeyTrait): 'city' | 'state' | 'postalCode' | 'country' | undefined {
  switch (trait) {
    case 'address.city': return 'city'
    case 'address.state': return 'state'
    case 'address.postalCode': return 'postalCode'
    case 'address.country': return 'country'
    default: return undefined
  }
}
