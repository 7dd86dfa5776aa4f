import { Type, type Static } from 'typebox'
import Value from 'typebox/value'
import { CURRENT_GRAPH_VERSION } from './graph-versions.js'

/** The destination's name in Segment messages (`integrations`, `context`). */
export const DESTINATION_NAME = 'Facebook Offline Conversions'
/** The destination's `type` in the admin API. */
export const DESTINATION_TYPE = 'facebook-offline-conversions'

/** The current Graph API version (graph-versions.ts): the default for `apiVersion`. */
export const DEFAULT_GRAPH_VERSION = CURRENT_GRAPH_VERSION
/** spec/facebook.md: the legacy offline API was last accepted by v16.0, so that format always uses it. */
export const LEGACY_GRAPH_VERSION = 'v16.0'

const DatasetId = Type.String({
  pattern: '^[0-9]+$',
  description: 'Meta dataset (offline event set) id: a string of digits',
  examples: ['794041057373779']
})

function eventMap (description: string) {
  return Type.Optional(Type.Record(Type.String(), DatasetId, { default: {}, description }))
}

/** Destination settings (DESIGN.md, "Destination settings"). */
export const FacebookSettingsSchema = Type.Object({
  completeRegistrationEvents: eventMap('Track event name → dataset id, sent as CompleteRegistration'),
  leadEvents: eventMap('Track event name → dataset id, sent as Lead'),
  conversionEvents: eventMap('Track event name → dataset id, sent as the semantic event (Order Completed → Purchase, …) or a custom event'),
  valueFieldIdentifier: Type.Optional(Type.Union([Type.Literal('value'), Type.Literal('price')], {
    default: 'value',
    description: 'Property that gives the value of events other than Order Completed'
  })),
  limitedDataUse: Type.Optional(Type.Boolean({
    default: false,
    description: 'Send Limited Data Use options from integrations["Facebook Offline Conversions"].dataProcessingOptions'
  })),
  apiFormat: Type.Optional(Type.Union([Type.Literal('conversions-api'), Type.Literal('offline-conversions')], {
    default: 'conversions-api',
    description: 'Conversions API (action_source physical_store) or the legacy offline conversions payload (Graph v16.0)'
  })),
  apiVersion: Type.Optional(Type.String({
    pattern: '^v[0-9]+\\.[0-9]+$',
    default: DEFAULT_GRAPH_VERSION,
    description: 'Graph API version for the Conversions API. The destination warns 90 days before Meta retires it, and holds its conversions once it has expired (status version_expired) until this is changed'
  })),
  testEventCode: Type.Optional(Type.String({
    minLength: 1,
    description: 'Meta test event code: events show in Events Manager\'s Test events tab'
  })),
  uploadTag: Type.Optional(Type.String({ minLength: 1, default: 'Segment', description: 'upload_tag of every request' })),
  sendAudienceProperties: Type.Optional(Type.Boolean({
    default: true,
    description: 'Add the user\'s audience memberships to custom_data'
  })),
  audienceEntryEvents: Type.Optional(Type.Record(Type.String(), DatasetId, {
    default: {},
    description: 'Audience key → dataset id: a conversion named after the audience when a user enters it'
  })),
  consentCategories: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 100 }), {
    default: [],
    maxItems: 50,
    uniqueItems: true,
    description: 'Segment Consent Management: consent category ids every one of which must be true in a message\'s context.consent.categoryPreferences (or, without one, in the consent last seen for its user) for it to reach this destination; [] takes every message'
  })),
  requireConsent: Type.Optional(Type.Boolean({
    default: false,
    description: 'With consentCategories: filter a message whose user\'s consent is not known at all (Segment lets it through)'
  }))
}, { $id: 'FacebookSettings', additionalProperties: false })

/** Settings as a client sends them: every key optional. */
export type FacebookSettingsInput = Static<typeof FacebookSettingsSchema>

/** Settings with every default applied (`testEventCode` stays optional: unset means none). */
export type FacebookSettings = Required<Omit<FacebookSettingsInput, 'testEventCode'>> & Pick<FacebookSettingsInput, 'testEventCode'>

const DATASET_ID_RULE = 'a dataset id is a string of digits'

// What each setting must be, for error messages that name the field and the rule
const SETTING_RULES: Readonly<Record<string, string>> = {
  completeRegistrationEvents: 'must be an object mapping event names to dataset ids',
  leadEvents: 'must be an object mapping event names to dataset ids',
  conversionEvents: 'must be an object mapping event names to dataset ids',
  audienceEntryEvents: 'must be an object mapping audience keys to dataset ids',
  valueFieldIdentifier: 'must be "value" or "price"',
  limitedDataUse: 'must be a boolean',
  apiFormat: 'must be "conversions-api" or "offline-conversions"',
  apiVersion: `must be a Graph API version such as "${DEFAULT_GRAPH_VERSION}"`,
  testEventCode: 'must be a non-empty string',
  uploadTag: 'must be a non-empty string',
  sendAudienceProperties: 'must be a boolean',
  consentCategories: 'must be an array of distinct consent category ids (non-empty strings, at most 50)',
  requireConsent: 'must be a boolean'
}

// Settings whose entries are dataset ids
const DATASET_MAPS: ReadonlySet<string> = new Set(['completeRegistrationEvents', 'leadEvents', 'conversionEvents', 'audienceEntryEvents'])

function unescapePointer (segment: string): string {
  return segment.replaceAll('~1', '/').replaceAll('~0', '~')
}

function describeError (error: { instancePath: string, keyword: string, params: unknown }): string | undefined {
  const path = error.instancePath.split('/').slice(1).map(unescapePointer)
  if (path.length === 0) {
    // at the root only unknown keys can fail: parseFacebookSettings checked it is an object
    const unknown = (error.params as { additionalProperties?: string[] }).additionalProperties ?? []
    return unknown.map((name) => `settings.${name}: is not a setting of this destination`).join('; ')
  }
  const [setting, entry] = path
  const rule = Object.hasOwn(SETTING_RULES, setting) ? SETTING_RULES[setting] : undefined
  if (rule === undefined) return `settings.${setting}: is not a setting of this destination`
  if (entry !== undefined && DATASET_MAPS.has(setting)) {
    return `settings.${setting}[${JSON.stringify(entry)}]: ${DATASET_ID_RULE}`
  }
  return `settings.${setting}: ${rule}`
}

/** Whether `value` holds an object or array `levels` levels down; a walk no deeper than that. */
function nestsDeeper (value: unknown, levels: number): boolean {
  if (typeof value !== 'object' || value === null) return false
  if (levels === 0) return true
  for (const item of Object.values(value)) if (nestsDeeper(item, levels - 1)) return true
  return false
}

/**
 * Validates destination settings and applies the defaults. Unknown keys are refused: a typo
 * such as `conversionEvent` would otherwise leave every event silently filtered.
 */
export function parseFacebookSettings (input: unknown): { settings: FacebookSettings } | { error: string } {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    return { error: 'settings: must be an object' }
  }
  // No setting holds an object inside an object (a map's entries are strings). One nested a few
  // thousand levels deep overflowed the stack in structuredClone below: a 500 for a 4xx mistake
  // (found by the fuzz tests). Refused first, naming the setting, with a walk that stays shallow.
  const tooDeep = Object.entries(input).filter(([, value]) => nestsDeeper(value, 1))
  if (tooDeep.length > 0) {
    return { error: tooDeep.map(([name]) => `settings.${name}: ${Object.hasOwn(SETTING_RULES, name) ? SETTING_RULES[name] : 'is not a setting of this destination'}`).join('; ') }
  }
  // structuredClone, not TypeBox's Value.Clone: that one drops a key named `constructor` (an event name
  // like any other in a map)
  const settings = Value.Default(FacebookSettingsSchema, structuredClone(input))
  if (Value.Check(FacebookSettingsSchema, settings)) {
    return { settings: settings as FacebookSettings }
  }
  // Every problem at once, each naming its field: a client fixes them in one round trip
  const messages: string[] = []
  for (const error of Value.Errors(FacebookSettingsSchema, settings)) {
    const message = describeError(error)
    if (message !== undefined && message !== '' && !messages.includes(message)) messages.push(message)
  }
  return { error: messages.length > 0 ? messages.join('; ') : 'settings: do not match the destination\'s settings schema' }
}

/** Graph API version for requests: the legacy format only ever existed up to v16.0. */
export function graphVersion (settings: FacebookSettings): string {
  return settings.apiFormat === 'offline-conversions' ? LEGACY_GRAPH_VERSION : settings.apiVersion
}
