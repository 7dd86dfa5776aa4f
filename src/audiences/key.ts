/**
 * Audience keys: the user-property name an audience is sent under (`traits: { <key>: true }`).
 * spec/segment.md ("Engage audiences and computed traits") gives our snake_case rule, since
 * Segment never documents its own.
 */
import { CANONICAL_MATCH_KEY_TRAITS, matchKeyTraitOf } from '../facebook/trait-spellings.js'

/** spec/segment.md: a key is at most 100 characters. */
export const AUDIENCE_KEY_MAX_LENGTH = 100

/**
 * DESIGN.md: a key must not collide with these traits — the profile's match keys, which the
 * Facebook transform reads from the same `traits` object the audience flags are written to —
 * nor with any other spelling of them (`phone_number`, `mobile`, `zip`: trait-spellings.ts).
 */
export const MATCH_KEY_TRAITS = CANONICAL_MATCH_KEY_TRAITS

// Only a lower-case letter before an upper-case one splits: `HighValue` → `High_Value`, while an
// acronym stays one word (`HTTPServer` → `httpserver`) and digits never split (`30days`).
const CASE_CHANGE = /(\p{Ll})(\p{Lu})/gu
// A word is letters and digits of any script. Combining marks belong to the letter before them
// (Devanagari, Thai and decomposed accents would otherwise break up mid-word); a mark with no
// letter before it is a separator like any other symbol.
const WORD = /[\p{L}\p{N}][\p{L}\p{N}\p{M}]*/gu

const EXAMPLE_KEY = 'order_completed_last_30days'

/**
 * The audience key derived from its name (`Order Completed Last 30days` →
 * `order_completed_last_30days`); undefined when the name has no letter or digit.
 */
export function audienceKeyFromName (name: string): string | undefined {
  // NFC first, so `é` typed as e + U+0301 gives the same key as the precomposed letter; again
  // after lower-casing, which can yield a decomposed sequence (`İ` → i + U+0307).
  const lower = name.normalize('NFC').replace(CASE_CHANGE, '$1_$2').toLowerCase().normalize('NFC')
  const words = lower.match(WORD)
  if (words === null) return undefined
  const key = words.join('_')
  // Cut by code points, not UTF-16 units, so a non-BMP letter is never split in half
  const codePoints = Array.from(key)
  if (codePoints.length <= AUDIENCE_KEY_MAX_LENGTH) return key
  return codePoints.slice(0, AUDIENCE_KEY_MAX_LENGTH).join('').replace(/_+$/u, '')
}

/**
 * Checks a key given explicitly at creation: it must already be in the form the rule would
 * give (so a key never depends on who derived it), and must not collide with a match-key trait.
 * Returns the error message, or undefined when the key is fine.
 */
export function checkAudienceKey (key: string): string | undefined {
  if (Array.from(key).length > AUDIENCE_KEY_MAX_LENGTH) {
    return `key must be at most ${AUDIENCE_KEY_MAX_LENGTH} characters`
  }
  if (key !== audienceKeyFromName(key)) {
    return `key must be snake_case letters and digits (e.g. "${EXAMPLE_KEY}")`
  }
  // spellings are compared without case and separators: `first_name`, `firstname` and
  // `given_name` would all be read as (or mistaken for) `firstName`
  const trait = matchKeyTraitOf(key)
  if (trait !== undefined) return `key "${key}" collides with the match-key trait "${trait}"`
  return undefined
}
