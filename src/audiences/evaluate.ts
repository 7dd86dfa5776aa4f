import { Duration } from 'luxon'
import { parseDecimal } from '../decimal.js'
import type { AudienceCondition, TraitOp } from './condition.js'

/**
 * Membership of one user in one audience, from the user's event counts and traits at a given
 * time. The engine calls this for every user it re-evaluates, so it allocates next to nothing:
 * each condition is compiled once (cached by identity; conditions never change after creation)
 * and results travel as numbers.
 */

const MS_PER_DAY = Duration.fromObject({ days: 1 }).toMillis()

/** The UTC day of a time: days since 1970-01-01 (history is counted in these buckets). */
export function dayNumber (ms: number): number {
  return Math.floor(ms / MS_PER_DAY)
}

/** When a UTC day starts, in ms since the epoch. */
export function dayStart (day: number): number {
  return day * MS_PER_DAY
}

/** An event leaf as the engine's counters know it. */
export interface CountedLeaf {
  /** the leaf's position in the tree (see eventLeaves) */
  readonly path: string
  readonly event: string
  /** the leaf has a `where`: its counts are its own counter's, kept from the audience's creation */
  readonly filtered: boolean
}

export interface EvaluationInput {
  /** the time of evaluation, ms since the epoch */
  now: number
  /** the user's events of the leaf per UTC day (day → count); days outside the window are ignored */
  counts: (leaf: CountedLeaf) => ReadonlyMap<number, number>
  /** the user's trait, undefined when the profile has none */
  trait: (name: string) => unknown
}

export interface Evaluation {
  member: boolean
  /** for a member: when membership ends if nothing new happens; absent when it never lapses */
  lapsesAt?: number
}

// Results as numbers, so combining them allocates nothing: a member's lapse time, or one of
// these. `all` is then the minimum of its children, `any` the maximum.
const NOT_MEMBER = -Infinity
const NEVER_LAPSES = Infinity

interface EventNode { kind: 'event', leaf: CountedLeaf, atLeast: number, withinDays: number }
interface TraitNode { kind: 'trait', trait: string, op: TraitOp, value: unknown }
interface GroupNode { kind: 'all' | 'any', children: Node[] }
type Node = EventNode | TraitNode | GroupNode

const compiled = new WeakMap<AudienceCondition, Node>()

function compile (condition: AudienceCondition, path: string): Node {
  switch (condition.type) {
    case 'event':
      return {
        kind: 'event',
        leaf: { path, event: condition.event, filtered: condition.where !== undefined },
        atLeast: condition.atLeast,
        withinDays: condition.withinDays
      }
    case 'trait':
      return { kind: 'trait', trait: condition.trait, op: condition.op, value: condition.value }
    default: {
      const prefix = path === '' ? '' : `${path}.`
      return { kind: condition.type, children: condition.conditions.map((child, i) => compile(child, `${prefix}${i}`)) }
    }
  }
}

/**
 * An event leaf: member while the leaf's window (the `withinDays` UTC days ending today) holds
 * `atLeast` events. Membership then ends when the oldest of the newest `atLeast` events leaves
 * the window: an event on day X counts until the start of day X + withinDays. Days after today
 * are not in the window: the answer is as of `now` (ingestion already corrects client clocks
 * with Segment's `sentAt` rule, so such days are rare and wrong).
 */
function eventUntil (node: EventNode, counts: EvaluationInput['counts'], today: number): number {
  const days = counts(node.leaf)
  const firstDay = today - node.withinDays + 1
  let total = 0
  let latest = firstDay
  for (const [day, count] of days) {
    // a day that is not a whole number is no bucket of ours (and the walk below would miss it)
    if (day < firstDay || day > today || !(count > 0) || !Number.isInteger(day)) continue
    total += count
    if (day > latest) latest = day
  }
  if (total < node.atLeast) return NOT_MEMBER
  if (node.atLeast === 1) return dayStart(latest + node.withinDays)
  // newest first until atLeast is reached: at most withinDays lookups, no sorting. It ends by
  // firstDay at the latest, since every day counted in `total` is on the way; `latest` has a
  // positive count.
  let day = latest
  let sum = days.get(day) as number
  while (sum < node.atLeast) {
    day--
    const count = days.get(day)
    if (count !== undefined && count > 0) sum += count
  }
  return dayStart(day + node.withinDays)
}

function numeric (value: unknown): number {
  if (typeof value === 'number') return value
  if (typeof value === 'string') return parseDecimal(value)
  return NaN
}

/**
 * A trait leaf. `equals` is strict: `"10"` does not equal `10`, nor `"true"` `true` — traits
 * keep the type the client sent, and a loose match would make `"01"` equal `1`. Comparisons
 * read a numeric string trait as its number (form fields often arrive as strings); anything
 * else, NaN included, compares false.
 */
function traitHolds (node: TraitNode, actual: unknown): boolean {
  switch (node.op) {
    case 'equals':
      return actual === node.value
    case 'exists':
      return actual !== undefined && actual !== null
    case 'gt':
      return numeric(actual) > (node.value as number)
    case 'gte':
      return numeric(actual) >= (node.value as number)
    case 'lt':
      return numeric(actual) < (node.value as number)
    case 'lte':
      return numeric(actual) <= (node.value as number)
  }
}

function until (node: Node, input: EvaluationInput, today: number): number {
  switch (node.kind) {
    case 'event':
      return eventUntil(node, input.counts, today)
    case 'trait':
      // a trait changes only with an identify, never with time
      return traitHolds(node, input.trait(node.trait)) ? NEVER_LAPSES : NOT_MEMBER
    case 'all': {
      let earliest = NEVER_LAPSES
      for (const child of node.children) {
        const lapse = until(child, input, today)
        if (lapse === NOT_MEMBER) return NOT_MEMBER
        if (lapse < earliest) earliest = lapse
      }
      return earliest
    }
    case 'any': {
      let latest = NOT_MEMBER
      for (const child of node.children) {
        const lapse = until(child, input, today)
        if (lapse === NEVER_LAPSES) return NEVER_LAPSES
        if (lapse > latest) latest = lapse
      }
      return latest
    }
  }
}

/**
 * Whether the user is a member at `input.now`, and for a member the earliest time membership
 * ends if no new event or identify arrives (the scheduler re-evaluates then).
 */
export function evaluate (condition: AudienceCondition, input: EvaluationInput): Evaluation {
  let node = compiled.get(condition)
  if (node === undefined) {
    node = compile(condition, '')
    compiled.set(condition, node)
  }
  const lapse = until(node, input, dayNumber(input.now))
  if (lapse === NOT_MEMBER) return { member: false }
  if (lapse === NEVER_LAPSES) return { member: true }
  return { member: true, lapsesAt: lapse }
}
