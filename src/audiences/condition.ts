import { Type, type Static } from 'typebox'

/**
 * Audience conditions (DESIGN.md, Admin API: audiences): event leaves count a user's events
 * within a window of days, trait leaves test the user's profile, and `all`/`any` groups combine
 * them. A condition never changes once the audience exists, so positions in the tree are
 * stable ids (see eventLeaves).
 */

/** Trait operators, in the order error messages list them. */
export const TRAIT_OPS = ['equals', 'exists', 'gt', 'gte', 'lt', 'lte'] as const
export type TraitOp = typeof TRAIT_OPS[number]

export const CONDITION_TYPES = ['event', 'trait', 'all', 'any'] as const

/** Segment's limit: at most 50 conditions (leaves) in one audience. */
export const MAX_CONDITIONS = 50
/** Groups nest at most this deep: a leaf sits inside at most 5 groups. */
export const MAX_GROUP_DEPTH = 5
export const MAX_AT_LEAST = 10_000
/**
 * Event names get history (and so can be an audience's) up to this many bytes of UTF-8: a
 * source's names are bounded by count and by size (10,000 × 200 bytes at most).
 */
export const MAX_EVENT_NAME_BYTES = 200

const PropertyValue = Type.Union([Type.String(), Type.Number(), Type.Boolean()])

export const EventConditionSchema = Type.Object({
  type: Type.Literal('event'),
  event: Type.String({ minLength: 1, description: 'Track event name, matched exactly', examples: ['Order Completed'] }),
  atLeast: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_AT_LEAST, description: 'Events needed within the window; 1 when absent' })),
  withinDays: Type.Integer({ minimum: 1, description: 'Window in UTC days ending today; at most the days of history kept' }),
  where: Type.Optional(Type.Record(Type.String(), PropertyValue, {
    description: 'Properties each counted event must have, compared strictly. Counted from the audience\'s creation on: event properties are not kept in history'
  }))
}, { additionalProperties: false, description: 'Performed an event at least `atLeast` times within `withinDays` days' })

export const TraitConditionSchema = Type.Object({
  type: Type.Literal('trait'),
  trait: Type.String({ minLength: 1, description: 'Profile trait name', examples: ['plan'] }),
  op: Type.Enum(TRAIT_OPS, { description: '`exists`: set and not null; `gt`/`gte`/`lt`/`lte`: numeric comparisons' }),
  value: Type.Optional(Type.Union([Type.String(), Type.Number(), Type.Boolean()], {
    description: '`equals`: a string, number or boolean, compared strictly (`"10"` is not `10`); `gt`/`gte`/`lt`/`lte`: a number (a numeric string trait is compared as its number); `exists`: absent'
  }))
}, { additionalProperties: false, description: 'Tests a trait of the user\'s profile' })

/** A leaf counting events: `atLeast` is always set once parsed. */
export type EventCondition = Omit<Static<typeof EventConditionSchema>, 'atLeast'> & { atLeast: number }
export type TraitCondition = Static<typeof TraitConditionSchema>
export interface GroupCondition {
  type: 'all' | 'any'
  conditions: AudienceCondition[]
}
export type AudienceCondition = EventCondition | TraitCondition | GroupCondition

export const GroupConditionSchema = Type.Object({
  type: Type.Enum(['all', 'any'], { description: '`all`: every condition holds; `any`: at least one does' }),
  // A reference to the union's own $id: the tree is recursive, and Ajv, TypeBox's Value and
  // the OpenAPI document all resolve a $ref to a registered schema.
  conditions: Type.Array(Type.Unsafe<AudienceCondition>({ $ref: 'AudienceCondition#' }), { minItems: 1 })
}, { additionalProperties: false, description: 'Combines conditions' })

export const AudienceConditionSchema = Type.Union([EventConditionSchema, TraitConditionSchema, GroupConditionSchema], {
  $id: 'AudienceCondition',
  description: `Audience condition: groups nest at most ${MAX_GROUP_DEPTH} deep, with at most ${MAX_CONDITIONS} event and trait conditions in all`
})

export interface ConditionLimits {
  /** Days of event history kept: the widest window an event condition may have. */
  retentionDays: number
}

// Fields of each kind of condition, for the unknown-key check and its message
const FIELDS = {
  event: { noun: 'an event condition', names: new Set(['type', 'event', 'atLeast', 'withinDays', 'where']) },
  trait: { noun: 'a trait condition', names: new Set(['type', 'trait', 'op', 'value']) },
  group: { noun: 'a group condition', names: new Set(['type', 'conditions']) }
} as const

// More messages than this help no one: the client fixes these and sends again
const MAX_MESSAGES = 10

interface ParseState {
  limits: ConditionLimits
  /** event and trait conditions seen */
  leaves: number
  /** problems found, including those past MAX_MESSAGES */
  problems: number
  errors: string[]
}

type Json = Record<string, unknown>

function isObject (value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function isNonEmptyString (value: unknown): value is string {
  // whitespace alone names no event or trait: surely a form field left blank
  return typeof value === 'string' && value.trim() !== ''
}

function isPropertyValue (value: unknown): value is string | number | boolean {
  return typeof value === 'string' || typeof value === 'boolean' || (typeof value === 'number' && Number.isFinite(value))
}

function isIntegerIn (value: unknown, min: number, max: number): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= min && value <= max
}

function fail (state: ParseState, path: string, rule: string): undefined {
  state.problems += 1
  if (state.errors.length < MAX_MESSAGES) state.errors.push(`${path}: ${rule}`)
  return undefined
}

function refuseUnknown (state: ParseState, path: string, input: Json, kind: keyof typeof FIELDS): void {
  const { noun, names } = FIELDS[kind]
  for (const name of Object.keys(input)) {
    if (!names.has(name)) fail(state, `${path}.${name}`, `is not a field of ${noun}`)
  }
}

function parseEvent (state: ParseState, path: string, input: Json): EventCondition | undefined {
  const problems = state.problems
  const { event, withinDays } = input
  // only an absent atLeast defaults: null is as wrong here as anywhere else
  const atLeast = input.atLeast === undefined ? 1 : input.atLeast
  if (!isNonEmptyString(event)) fail(state, `${path}.event`, 'must be a non-empty string')
  else if (Buffer.byteLength(event) > MAX_EVENT_NAME_BYTES) fail(state, `${path}.event`, `must be at most ${MAX_EVENT_NAME_BYTES} bytes (longer event names get no history)`)
  if (!isIntegerIn(atLeast, 1, MAX_AT_LEAST)) fail(state, `${path}.atLeast`, `must be an integer from 1 to ${MAX_AT_LEAST}`)
  const { retentionDays } = state.limits
  if (!isIntegerIn(withinDays, 1, retentionDays)) {
    fail(state, `${path}.withinDays`, `must be an integer from 1 to ${retentionDays} (the history kept)`)
  }
  let where: Record<string, string | number | boolean> | undefined
  if (input.where !== undefined) {
    if (!isObject(input.where)) {
      fail(state, `${path}.where`, 'must be an object mapping property names to values')
    } else {
      const entries = Object.entries(input.where)
      for (const [name, value] of entries) {
        if (!isPropertyValue(value)) fail(state, `${path}.where.${name}`, 'must be a string, number or boolean')
      }
      // `{}` filters nothing: counting from history is what the client meant. fromEntries
      // defines own properties, so a property named `__proto__` stays a plain name.
      if (entries.length > 0) where = Object.fromEntries(entries) as Record<string, string | number | boolean>
    }
  }
  refuseUnknown(state, path, input, 'event')
  if (state.problems !== problems) return undefined
  const condition: EventCondition = { type: 'event', event: event as string, atLeast: atLeast as number, withinDays: withinDays as number }
  if (where !== undefined) condition.where = where
  return condition
}

function parseTrait (state: ParseState, path: string, input: Json): TraitCondition | undefined {
  const problems = state.problems
  const { trait, op, value } = input
  if (!isNonEmptyString(trait)) fail(state, `${path}.trait`, 'must be a non-empty string')
  if (!TRAIT_OPS.includes(op as TraitOp)) {
    fail(state, `${path}.op`, `must be one of ${TRAIT_OPS.join(', ')}`)
  } else if (op === 'exists') {
    // any `value`, even null, is refused: the client surely meant another op
    if ('value' in input) fail(state, `${path}.op`, '"exists" takes no value')
  } else if (op === 'equals') {
    if (!isPropertyValue(value)) fail(state, `${path}.value`, 'op "equals" needs a string, number or boolean')
  } else if (typeof value !== 'number' || !Number.isFinite(value)) {
    fail(state, `${path}.value`, `op "${op as string}" needs a number`)
  }
  refuseUnknown(state, path, input, 'trait')
  if (state.problems !== problems) return undefined
  const condition: TraitCondition = { type: 'trait', trait: trait as string, op: op as TraitOp }
  if (op !== 'exists') condition.value = value as string | number | boolean
  return condition
}

function parseNode (state: ParseState, path: string, input: unknown, groupDepth: number): AudienceCondition | undefined {
  if (!isObject(input)) return fail(state, path, 'must be an object')
  const type = input.type
  if (type === 'event') {
    state.leaves += 1
    return parseEvent(state, path, input)
  }
  if (type === 'trait') {
    state.leaves += 1
    return parseTrait(state, path, input)
  }
  if (type !== 'all' && type !== 'any') return fail(state, `${path}.type`, `must be one of ${CONDITION_TYPES.join(', ')}`)
  if (groupDepth === MAX_GROUP_DEPTH) return fail(state, path, `groups nest at most ${MAX_GROUP_DEPTH} deep`)
  refuseUnknown(state, path, input, 'group')
  const items = input.conditions
  if (!Array.isArray(items) || items.length === 0) return fail(state, `${path}.conditions`, 'must be a non-empty array')
  const conditions: AudienceCondition[] = []
  for (let i = 0; i < items.length; i++) {
    // every child is looked at, so all their problems are named
    const child = parseNode(state, `${path}.conditions[${i}]`, items[i], groupDepth + 1)
    if (child !== undefined) conditions.push(child)
  }
  return { type, conditions }
}

function errorMessage (state: ParseState): string {
  const untold = state.problems - Math.min(state.problems, MAX_MESSAGES)
  return untold > 0 ? `${state.errors.join('; ')}; and ${untold} more` : state.errors.join('; ')
}

/**
 * Validates a condition from the Admin API and fills in defaults (`atLeast` 1). The error
 * names every problem found (up to ten), each with its path and the rule broken, so a client
 * fixes them in one round trip.
 */
export function parseCondition (input: unknown, limits: ConditionLimits): { condition: AudienceCondition } | { error: string } {
  const state: ParseState = { limits, leaves: 0, problems: 0, errors: [] }
  const condition = parseNode(state, 'condition', input, 0)
  if (state.leaves > MAX_CONDITIONS) {
    // first: fixing the other problems would not be enough
    state.errors.unshift(`condition: has ${state.leaves} event and trait conditions; an audience may have at most ${MAX_CONDITIONS}`)
    return { error: errorMessage(state) }
  }
  // any problem fails the whole condition: the tree built alongside may be partial
  if (condition === undefined || state.problems > 0) return { error: errorMessage(state) }
  return { condition }
}

function collect (condition: AudienceCondition, visit: (leaf: EventCondition | TraitCondition, path: string) => void, path: string): void {
  if (condition.type === 'event' || condition.type === 'trait') {
    visit(condition, path)
  } else {
    const prefix = path === '' ? '' : `${path}.`
    condition.conditions.forEach((child, i) => collect(child, visit, `${prefix}${i}`))
  }
}

/** Event names the condition counts: the events whose history an audience needs. */
export function conditionEvents (condition: AudienceCondition): Set<string> {
  const events = new Set<string>()
  collect(condition, (leaf) => { if (leaf.type === 'event') events.add(leaf.event) }, '')
  return events
}

/** Trait names the condition reads: an identify changing one of them re-evaluates the user. */
export function conditionTraits (condition: AudienceCondition): Set<string> {
  const traits = new Set<string>()
  collect(condition, (leaf) => { if (leaf.type === 'trait') traits.add(leaf.trait) }, '')
  return traits
}

/**
 * Every event leaf with its position in the tree: child indexes joined by `.` (`'0'`, `'1.0'`;
 * `''` when the root is the leaf). DESIGN.md: `where` filters count events from the audience's
 * creation on, so each such leaf keeps its own counter, named by this path.
 */
export function eventLeaves (condition: AudienceCondition): Array<{ path: string, leaf: EventCondition }> {
  const leaves: Array<{ path: string, leaf: EventCondition }> = []
  collect(condition, (leaf, path) => { if (leaf.type === 'event') leaves.push({ path, leaf }) }, '')
  return leaves
}

/**
 * Whether an event's properties pass a leaf's `where`: each listed property, at the top level of
 * `properties` (a name with a dot is a name, not a path), is strictly equal (`"10"` is not `10`).
 */
export function matchesWhere (where: Readonly<Record<string, string | number | boolean>>, properties: Readonly<Record<string, unknown>> | undefined): boolean {
  for (const name in where) {
    // own properties only: `constructor` or `toString` must not come from Object.prototype
    if (properties === undefined || !Object.hasOwn(properties, name) || properties[name] !== where[name]) return false
  }
  return true
}
