// Segment's Consent Management: a message says which consent categories its user agreed to in
// `context.consent.categoryPreferences` (`{"Advertising": true, "Analytics": false}`; keys are
// category ids), and a destination names the categories it needs. Pure.
import type { SegmentMessage } from './types.js'

/** Category id → whether the user consented to it. */
export type Consent = Readonly<Record<string, boolean>>

/** The event Segment's consent wrappers send when a user changes their preferences. */
export const CONSENT_UPDATED_EVENT = 'Segment Consent Preference Updated'

function isObject (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/**
 * The consent a message carries; undefined when it carries none (no `context.consent` with a
 * `categoryPreferences` object). Only boolean entries count: any other value says nothing.
 */
export function messageConsent (message: SegmentMessage): Consent | undefined {
  const consent = isObject(message.context) ? message.context.consent : undefined
  const preferences = isObject(consent) ? consent.categoryPreferences : undefined
  if (!isObject(preferences)) return undefined
  const categories: Record<string, boolean> = {}
  for (const [category, value] of Object.entries(preferences)) {
    if (typeof value === 'boolean' && category !== '__proto__') categories[category] = value
  }
  return categories
}

/** What a destination asks of consent: the categories it needs, and whether a message without any consent is filtered. */
export interface ConsentRule {
  categories: readonly string[]
  requireConsent: boolean
}

/**
 * Whether a destination may get a message of a user with this consent (the message's own, else
 * the last seen on the user's profile; undefined: none known). Segment's rule: every category
 * the destination names must be `true`; without any consent the message flows, unless the
 * destination requires consent. A destination that names no category takes everything.
 */
export function consentAllows (rule: ConsentRule, consent: Consent | undefined): boolean {
  if (rule.categories.length === 0) return true
  if (consent === undefined) return !rule.requireConsent
  return rule.categories.every((category) => Object.hasOwn(consent, category) && consent[category] === true)
}
