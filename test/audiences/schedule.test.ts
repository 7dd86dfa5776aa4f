import t from 'tap'
import { DEFAULT_SCHEDULE, parseSchedule } from '../../src/audiences/schedule.js'

const RULE = 'schedule.every: must be an ISO-8601 duration from PT1M to P1D (e.g. "PT15M")'

t.test('no schedule: every 15 minutes', async (t) => {
  t.equal(DEFAULT_SCHEDULE, 'PT15M')
  t.same(parseSchedule(undefined), { everyMs: 15 * 60_000, every: 'PT15M' })
})

t.test('durations from one minute to one day', async (t) => {
  const cases: ReadonlyArray<readonly [string, number, string]> = [
    ['PT15M', 900_000, 'PT15M'],
    ['PT1M', 60_000, 'PT1M'],
    ['PT60S', 60_000, 'PT60S'],
    ['PT90S', 90_000, 'PT90S'],
    ['PT1.5M', 90_000, 'PT1.5M'],
    ['PT1H30M', 5_400_000, 'PT1H30M'],
    ['PT2H', 7_200_000, 'PT2H'],
    ['PT24H', 86_400_000, 'PT24H'],
    ['P1D', 86_400_000, 'P1D'],
    // luxon's own spelling comes back
    ['P0DT15M', 900_000, 'PT15M']
  ]
  for (const [every, everyMs, written] of cases) t.same(parseSchedule({ every }), { everyMs, every: written }, every)
})

t.test('every problem names schedule.every or the field', async (t) => {
  const refused: unknown[] = [
    'PT59S', 'PT0S', 'PT', 'P', 'PT1441M', 'P1DT1S', 'P2D', 'P1W', 'P1M', 'P1Y', 'PT-15M', '-PT15M',
    'pt15m', '15m', '15 minutes', '', 900_000, null, true, ['PT15M']
  ]
  for (const every of refused) t.same(parseSchedule({ every }), { error: RULE }, JSON.stringify(every))
  t.same(parseSchedule({}), { error: RULE }, 'every is required')
  t.same(parseSchedule({ every: 'PT15M', cron: '*/15 * * * *' }), { error: 'schedule.cron: is not a field of a schedule' })
  t.same(parseSchedule({ every: 'PT5S', at: 1 }), { error: `${RULE}; schedule.at: is not a field of a schedule` })
  for (const input of [null, 'PT15M', 900_000, ['PT15M']]) {
    t.same(parseSchedule(input), { error: 'schedule: must be an object such as {"every": "PT15M"}' }, JSON.stringify(input))
  }
})
