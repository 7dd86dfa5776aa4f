import { Duration } from 'luxon'

/**
 * How often an audience is re-evaluated on a schedule (DESIGN.md: `schedule: {"every": "PT15M"}`).
 * Time windows change membership with no new event (a last order ages out), so only scheduled
 * runs notice; spec/segment.md: Segment syncs every two to three hours, ours should be far faster.
 */

/** Every 15 minutes when an audience gives no schedule. */
export const DEFAULT_SCHEDULE = 'PT15M'

// Shorter would re-read every member's history for little gain; longer would let a window
// expiry wait more than a day, while the windows themselves are counted in days.
const MIN_EVERY = Duration.fromISO('PT1M')
const MAX_EVERY = Duration.fromISO('P1D')

const EVERY_RULE = `must be an ISO-8601 duration from ${MIN_EVERY.toISO()} to ${MAX_EVERY.toISO()} (e.g. "${DEFAULT_SCHEDULE}")`

/**
 * Validates an audience's `schedule`; absent means the default. `every` comes back as luxon
 * writes it (`P0DT15M` → `PT15M`), `everyMs` in milliseconds for the job scheduler. Months
 * and years are refused by the range: their length varies.
 */
export function parseSchedule (input: unknown): { everyMs: number, every: string } | { error: string } {
  if (input === undefined) return parseSchedule({ every: DEFAULT_SCHEDULE })
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    return { error: `schedule: must be an object such as {"every": "${DEFAULT_SCHEDULE}"}` }
  }
  const errors: string[] = []
  for (const name of Object.keys(input)) {
    if (name !== 'every') errors.push(`schedule.${name}: is not a field of a schedule`)
  }
  const every: unknown = (input as { every?: unknown }).every
  const duration = typeof every === 'string' ? Duration.fromISO(every) : undefined
  const everyMs = duration?.isValid === true ? duration.toMillis() : NaN
  if (!(everyMs >= MIN_EVERY.toMillis() && everyMs <= MAX_EVERY.toMillis())) errors.unshift(`schedule.every: ${EVERY_RULE}`)
  if (errors.length > 0 || duration === undefined) return { error: errors.join('; ') }
  return { everyMs, every: duration.toISO() as string }
}
