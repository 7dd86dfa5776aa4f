import t from 'tap'
import { DateTime } from 'luxon'
import { parseCondition, type AudienceCondition } from '../../src/audiences/condition.js'
import { dayNumber, dayStart, evaluate, type CountedLeaf, type EvaluationInput } from '../../src/audiences/evaluate.js'

function ms (iso: string): number {
  return DateTime.fromISO(iso, { zone: 'utc' }).toMillis()
}

function day (isoDate: string): number {
  return dayNumber(ms(isoDate))
}

function condition (input: unknown): AudienceCondition {
  const result = parseCondition(input, { retentionDays: 90 })
  if ('error' in result) throw new Error(result.error)
  return result.condition
}

interface User {
  /** event name → ISO date → count (the unfiltered history) */
  events?: Record<string, Record<string, number>>
  /** leaf path → ISO date → count (the counters of leaves with `where`) */
  filtered?: Record<string, Record<string, number>>
  traits?: Record<string, unknown>
}

function byDay (counts: Record<string, number> | undefined): Map<number, number> {
  return new Map(Object.entries(counts ?? {}).map(([date, count]) => [day(date), count]))
}

function input (now: string | number, user: User): EvaluationInput {
  return {
    now: typeof now === 'number' ? now : ms(now),
    counts: (leaf) => byDay(leaf.filtered ? user.filtered?.[leaf.path] : user.events?.[leaf.event]),
    trait: (name) => user.traits?.[name]
  }
}

const NOW = '2024-03-10T12:00:00Z'

function ordered (withinDays: number, atLeast = 1, event = 'Order Completed'): AudienceCondition {
  return condition({ type: 'event', event, atLeast, withinDays })
}

t.test('days are UTC days since the epoch', async (t) => {
  t.equal(dayNumber(0), 0)
  t.equal(dayNumber(ms('1970-01-01T23:59:59.999Z')), 0)
  t.equal(dayNumber(ms('1970-01-02T00:00:00Z')), 1)
  t.equal(dayNumber(-1), -1, 'the last millisecond of 1969 is day -1')
  t.equal(dayNumber(ms('2024-03-10T00:00:00Z')), dayNumber(ms('2024-03-10T23:59:59.999Z')))
  // a time given with an offset is still bucketed by its UTC day
  t.equal(dayNumber(ms('2024-03-10T23:30:00-02:00')), day('2024-03-11'))
  t.equal(dayStart(day('2024-03-10')), ms('2024-03-10T00:00:00Z'))
  t.equal(dayStart(0), 0)
  for (const iso of ['2024-02-29T13:14:15Z', '2024-12-31T23:59:59.999Z', '1969-07-20T20:17:00Z']) {
    t.equal(dayStart(dayNumber(ms(iso))), DateTime.fromISO(iso, { zone: 'utc' }).startOf('day').toMillis(), iso)
  }
})

t.test('within D days: the D UTC days ending today', async (t) => {
  const within30 = ordered(30)
  // 2024-02-10 is 29 days before 2024-03-10: the first day of the window
  const lastDay = evaluate(within30, input(NOW, { events: { 'Order Completed': { '2024-02-10': 1 } } }))
  t.same(lastDay, { member: true, lapsesAt: ms('2024-03-11T00:00:00Z') }, 'an event D − 1 days ago keeps the user a member until midnight')
  t.same(evaluate(within30, input(NOW, { events: { 'Order Completed': { '2024-02-09': 1 } } })), { member: false }, 'an event D days ago is out')
  t.same(evaluate(within30, input(NOW, { events: { 'Order Completed': { '2024-03-10': 1 } } })), { member: true, lapsesAt: ms('2024-04-09T00:00:00Z') })
  // withinDays 1: today only
  t.same(evaluate(ordered(1), input(NOW, { events: { 'Order Completed': { '2024-03-10': 1 } } })), { member: true, lapsesAt: ms('2024-03-11T00:00:00Z') })
  t.same(evaluate(ordered(1), input(NOW, { events: { 'Order Completed': { '2024-03-09': 5 } } })), { member: false })
  // other events do not count
  t.same(evaluate(within30, input(NOW, { events: { 'Order Refunded': { '2024-03-10': 1 } } })), { member: false })
  t.same(evaluate(within30, input(NOW, {})), { member: false })
})

t.test('atLeast: the newest events that reach it decide when membership lapses', async (t) => {
  const thrice = ordered(30, 3)
  const history = { '2024-03-10': 1, '2024-03-05': 1, '2024-02-29': 2, '2024-02-01': 7 }
  // newest first: 03-10 (1), 03-05 (2), 02-29 (4 ≥ 3) → lapses 30 days after 02-29
  t.same(evaluate(thrice, input(NOW, { events: { 'Order Completed': history } })), { member: true, lapsesAt: ms('2024-03-30T00:00:00Z') })
  // two in the window is one short; the 02-01 ones are out of it
  t.same(evaluate(thrice, input(NOW, { events: { 'Order Completed': { '2024-03-10': 1, '2024-03-05': 1, '2024-02-01': 7 } } })), { member: false })
  // several on one day
  t.same(evaluate(thrice, input(NOW, { events: { 'Order Completed': { '2024-03-08': 3 } } })), { member: true, lapsesAt: ms('2024-04-07T00:00:00Z') })
  t.same(evaluate(thrice, input(NOW, { events: { 'Order Completed': { '2024-03-08': 2 } } })), { member: false })
  // exactly atLeast, the oldest on the window's first day
  t.same(evaluate(thrice, input(NOW, { events: { 'Order Completed': { '2024-02-10': 1, '2024-03-01': 2 } } })), { member: true, lapsesAt: ms('2024-03-11T00:00:00Z') })
  t.same(evaluate(thrice, input(NOW, { events: { 'Order Completed': { '2024-02-09': 1, '2024-03-01': 2 } } })), { member: false })
  // atLeast 1 takes the newest day, whatever order the counts come in
  t.same(evaluate(ordered(30), input(NOW, { events: { 'Order Completed': { '2024-02-20': 1, '2024-03-07': 1, '2024-03-01': 4 } } })), { member: true, lapsesAt: ms('2024-04-06T00:00:00Z') })
})

t.test('days the engine should not have are ignored', async (t) => {
  // zero or negative counts and days that are not whole numbers are no events
  const odd = new Map([[day('2024-03-09'), 0], [day('2024-03-08'), -2], [day('2024-03-07') + 0.5, 1]])
  const oddInput: EvaluationInput = { now: ms(NOW), counts: () => odd, trait: () => undefined }
  t.same(evaluate(ordered(30), oddInput), { member: false })
  t.same(evaluate(ordered(30, 2), { ...oddInput, counts: () => new Map([...odd, [day('2024-03-01'), 1], [day('2024-03-05'), 1]]) }),
    { member: true, lapsesAt: ms('2024-03-31T00:00:00Z') })
})

t.test('events dated after today are not counted yet', async (t) => {
  // membership is as of `now`: an event on a later day (a client clock far ahead) counts from its day on
  const ahead = { 'Order Completed': { '2024-03-11': 1 } }
  t.same(evaluate(ordered(30), input(NOW, { events: ahead })), { member: false })
  t.same(evaluate(ordered(30), input('2024-03-11T00:00:00Z', { events: ahead })), { member: true, lapsesAt: ms('2024-04-10T00:00:00Z') })
  t.same(evaluate(ordered(30, 2), input(NOW, { events: { 'Order Completed': { '2024-03-12': 5, '2024-03-01': 1 } } })), { member: false })
  t.same(evaluate(ordered(30, 2), input(NOW, { events: { 'Order Completed': { '2024-03-12': 5, '2024-03-01': 1, '2024-02-15': 1 } } })),
    { member: true, lapsesAt: ms('2024-03-16T00:00:00Z') })
})

t.test('a member ages out as time passes, with no new event', async (t) => {
  const within7 = ordered(7, 2)
  const user: User = { events: { 'Order Completed': { '2024-03-01': 1, '2024-03-04': 1 } } }
  const first = evaluate(within7, input('2024-03-04T08:00:00Z', user))
  t.same(first, { member: true, lapsesAt: ms('2024-03-08T00:00:00Z') })
  t.same(evaluate(within7, input('2024-03-07T23:59:59.999Z', user)), first, 'still a member the millisecond before')
  t.same(evaluate(within7, input(first.lapsesAt as number, user)), { member: false }, 'out at lapsesAt')
  t.same(evaluate(within7, input('2024-03-20T00:00:00Z', user)), { member: false })
  // before any of the events, the user was not a member either
  t.same(evaluate(within7, input('2024-02-20T00:00:00Z', user)), { member: false })
  // hour by hour, member exactly until lapsesAt
  for (let now = ms('2024-03-04T00:00:00Z'); now < ms('2024-03-09T00:00:00Z'); now += 3_600_000) {
    t.equal(evaluate(within7, input(now, user)).member, now < ms('2024-03-08T00:00:00Z'), new Date(now).toISOString())
  }
})

t.test('leaves with where read their own counters, named by path', async (t) => {
  const audience = condition({
    type: 'all',
    conditions: [
      { type: 'event', event: 'Order Completed', withinDays: 30, where: { plan: 'pro' } },
      { type: 'any', conditions: [{ type: 'event', event: 'Order Completed', withinDays: 7 }, { type: 'event', event: 'Order Completed', withinDays: 14, where: { gift: true } }] }
    ]
  })
  const asked: CountedLeaf[] = []
  const user: User = {
    events: { 'Order Completed': { '2024-03-09': 1, '2024-02-20': 1 } },
    filtered: { 0: { '2024-02-20': 1 }, 1.1: { '2024-03-01': 1 } }
  }
  const base = input(NOW, user)
  const result = evaluate(audience, { ...base, counts: (leaf) => { asked.push(leaf); return base.counts(leaf) } })
  t.same(asked, [
    { path: '0', event: 'Order Completed', filtered: true },
    { path: '1.0', event: 'Order Completed', filtered: false },
    { path: '1.1', event: 'Order Completed', filtered: true }
  ])
  // all(min): pro order 02-20 → 03-21; any(max): 03-09 + 7 → 03-16, gift 03-01 + 14 → 03-15
  t.same(result, { member: true, lapsesAt: ms('2024-03-16T00:00:00Z') })
  // history without the property does not satisfy a where: only the leaf's counter does
  t.same(evaluate(audience, input(NOW, { events: user.events })), { member: false })
  // a root leaf has the empty path
  const rootLeaf = condition({ type: 'event', event: 'Order Completed', withinDays: 30, where: { plan: 'pro' } })
  t.same(evaluate(rootLeaf, input(NOW, { filtered: { '': { '2024-03-10': 1 } } })), { member: true, lapsesAt: ms('2024-04-09T00:00:00Z') })
})

t.test('all and any: membership and when it lapses', async (t) => {
  const events = { 'Order Completed': { '2024-03-05': 1 }, 'Signed Up': { '2024-03-08': 1 } }
  const traits = { plan: 'pro' }
  const orderedLeaf = { type: 'event', event: 'Order Completed', withinDays: 10 } // lapses 03-15
  const signedUp = { type: 'event', event: 'Signed Up', withinDays: 3 } // lapses 03-11
  const viewed = { type: 'event', event: 'Cart Viewed', withinDays: 30 } // never
  const pro = { type: 'trait', trait: 'plan', op: 'equals', value: 'pro' }
  const free = { type: 'trait', trait: 'plan', op: 'equals', value: 'free' }
  const cases: ReadonlyArray<readonly [string, unknown, { member: boolean, lapsesAt?: number }]> = [
    ['all: the earliest lapse', { type: 'all', conditions: [orderedLeaf, signedUp] }, { member: true, lapsesAt: ms('2024-03-11T00:00:00Z') }],
    ['all: one child out', { type: 'all', conditions: [orderedLeaf, viewed] }, { member: false }],
    ['all: a trait never lapses', { type: 'all', conditions: [pro, orderedLeaf] }, { member: true, lapsesAt: ms('2024-03-15T00:00:00Z') }],
    ['all: traits only', { type: 'all', conditions: [pro] }, { member: true }],
    ['all: a trait that fails', { type: 'all', conditions: [orderedLeaf, free] }, { member: false }],
    ['any: the latest lapse', { type: 'any', conditions: [signedUp, orderedLeaf] }, { member: true, lapsesAt: ms('2024-03-15T00:00:00Z') }],
    ['any: children out do not count', { type: 'any', conditions: [viewed, signedUp, free] }, { member: true, lapsesAt: ms('2024-03-11T00:00:00Z') }],
    ['any: a member child that never lapses', { type: 'any', conditions: [signedUp, pro, orderedLeaf] }, { member: true }],
    ['any: no child', { type: 'any', conditions: [viewed, free] }, { member: false }],
    ['nested', { type: 'all', conditions: [{ type: 'any', conditions: [viewed, orderedLeaf] }, { type: 'any', conditions: [signedUp, free] }] }, { member: true, lapsesAt: ms('2024-03-11T00:00:00Z') }],
    ['nested, an inner all out', { type: 'any', conditions: [{ type: 'all', conditions: [orderedLeaf, viewed] }, { type: 'all', conditions: [signedUp, pro] }] }, { member: true, lapsesAt: ms('2024-03-11T00:00:00Z') }]
  ]
  for (const [name, audience, expected] of cases) t.same(evaluate(condition(audience), input(NOW, { events, traits })), expected, name)
  // a day after the sign-up window closes, only the order keeps the any-audience
  const any = condition({ type: 'any', conditions: [signedUp, orderedLeaf] })
  t.same(evaluate(any, input('2024-03-11T00:00:00Z', { events })), { member: true, lapsesAt: ms('2024-03-15T00:00:00Z') })
  t.same(evaluate(any, input('2024-03-15T00:00:00Z', { events })), { member: false })
})

t.test('trait operators', async (t) => {
  const cases: ReadonlyArray<readonly [string, unknown, unknown, boolean]> = [
    // equals is strict
    ['equals', 'pro', 'pro', true],
    ['equals', 'pro', 'Pro', false],
    ['equals', 'pro', ' pro', false],
    ['equals', 'pro', undefined, false],
    ['equals', 10, 10, true],
    ['equals', 10, '10', false],
    ['equals', 0, -0, true],
    ['equals', 1, true, false],
    ['equals', true, true, true],
    ['equals', true, 'true', false],
    ['equals', false, undefined, false],
    ['equals', false, null, false],
    ['equals', 'pro', ['pro'], false],
    // exists: set and not null
    ['exists', undefined, 'pro', true],
    ['exists', undefined, '', true],
    ['exists', undefined, 0, true],
    ['exists', undefined, false, true],
    ['exists', undefined, {}, true],
    ['exists', undefined, null, false],
    ['exists', undefined, undefined, false],
    // comparisons: numbers, numeric strings read as numbers, anything else false
    ['gt', 18, 19, true],
    ['gt', 18, 18, false],
    ['gte', 18, 18, true],
    ['gte', 18, 17.9, false],
    ['lt', 18, 17, true],
    ['lt', 18, 18, false],
    ['lte', 18, 18, true],
    ['lte', 18, 18.1, false],
    ['gt', -5, -4, true],
    ['gt', 18, '19', true],
    ['gt', 18, ' 19 ', true],
    ['gt', 18, '18.5', true],
    ['gt', 18, '+20', true],
    ['gt', 18, '1e2', true],
    ['lt', 1, '.5', true],
    ['lt', 0, '-1', true],
    ['gte', 18, '18', true],
    ['lt', 18, '17.', true],
    ['gt', 18, '0x20', false],
    ['lt', 18, '', false],
    ['lt', 18, ' ', false],
    ['gt', 18, 'abc', false],
    ['gt', 18, '20 years', false],
    ['lt', 18, 'Infinity', false],
    ['gt', 18, Number.NaN, false],
    ['lt', 18, Number.NaN, false],
    ['lt', 1, true, false],
    ['lt', 1, false, false],
    ['lt', 1, null, false],
    ['lt', 1, undefined, false],
    ['lt', 1, [0], false],
    ['gt', 18, Infinity, true]
  ]
  for (const [op, value, actual, member] of cases) {
    const audience = condition(op === 'exists' ? { type: 'trait', trait: 'x', op } : { type: 'trait', trait: 'x', op, value })
    t.same(evaluate(audience, input(NOW, { traits: { x: actual } })), { member }, `${op} ${JSON.stringify(value) ?? ''} with ${String(actual)} (${typeof actual})`)
  }
})

t.test('traits are read by name and never lapse', async (t) => {
  const names: string[] = []
  const audience = condition({ type: 'all', conditions: [{ type: 'trait', trait: 'plan', op: 'exists' }, { type: 'trait', trait: 'age', op: 'gte', value: 18 }] })
  const result = evaluate(audience, { now: ms(NOW), counts: () => { throw new Error('no events needed') }, trait: (name) => { names.push(name); return name === 'plan' ? 'pro' : 30 } })
  t.same(result, { member: true })
  t.same(names, ['plan', 'age'])
  // the same audience, years later: still a member
  t.same(evaluate(audience, input('2034-03-10T00:00:00Z', { traits: { plan: 'pro', age: 30 } })), { member: true })
})

t.test('one condition evaluated for many users gives each their own answer', async (t) => {
  const audience = condition({ type: 'any', conditions: [{ type: 'event', event: 'Order Completed', withinDays: 7, where: { plan: 'pro' } }, { type: 'trait', trait: 'vip', op: 'equals', value: true }] })
  const users: ReadonlyArray<readonly [User, { member: boolean, lapsesAt?: number }]> = [
    [{ filtered: { 0: { '2024-03-09': 1 } } }, { member: true, lapsesAt: ms('2024-03-16T00:00:00Z') }],
    [{ traits: { vip: true } }, { member: true }],
    [{ events: { 'Order Completed': { '2024-03-09': 1 } } }, { member: false }],
    [{ filtered: { 0: { '2024-03-01': 1 } }, traits: { vip: 'true' } }, { member: false }]
  ]
  for (let round = 0; round < 2; round++) {
    for (const [user, expected] of users) t.same(evaluate(audience, input(NOW, user)), expected, JSON.stringify(user))
  }
})
