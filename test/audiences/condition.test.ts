import t from 'tap'
import Fastify from 'fastify'
import Value from 'typebox/value'
import {
  AudienceConditionSchema,
  conditionEvents,
  conditionTraits,
  eventLeaves,
  matchesWhere,
  MAX_CONDITIONS,
  parseCondition,
  type AudienceCondition
} from '../../src/audiences/condition.js'

const LIMITS = { retentionDays: 90 }

function parsed (input: unknown): AudienceCondition {
  const result = parseCondition(input, LIMITS)
  if ('error' in result) throw new Error(result.error)
  return result.condition
}

function errorOf (input: unknown, limits = LIMITS): string {
  const result = parseCondition(input, limits)
  if ('condition' in result) throw new Error(`expected an error for ${JSON.stringify(input)}`)
  return result.error
}

const ORDERED = { type: 'event', event: 'Order Completed', atLeast: 1, withinDays: 30 }
const PRO = { type: 'trait', trait: 'plan', op: 'equals', value: 'pro' }

function nested (depth: number, leaf: unknown): unknown {
  let condition = leaf
  for (let i = 0; i < depth; i++) condition = { type: 'all', conditions: [condition] }
  return condition
}

t.test('the schema is a named component and accepts what parseCondition accepts', async (t) => {
  t.equal(Reflect.get(AudienceConditionSchema, '$id'), 'AudienceCondition')
  const valid = [
    ORDERED,
    PRO,
    { type: 'event', event: 'Order Completed', withinDays: 7, where: { plan: 'pro', total: 10, gift: false } },
    { type: 'trait', trait: 'plan', op: 'exists' },
    { type: 'any', conditions: [ORDERED, { type: 'all', conditions: [PRO, { type: 'trait', trait: 'age', op: 'gte', value: 18 }] }] }
  ]
  for (const condition of valid) {
    t.ok(Value.Check(AudienceConditionSchema, condition), JSON.stringify(condition))
    t.ok('condition' in parseCondition(condition, LIMITS))
  }
  const invalid = [
    { type: 'event', event: 'Order Completed' },
    { type: 'trait', trait: 'plan', op: 'like', value: 'p%' },
    { type: 'all', conditions: [] },
    { type: 'all', conditions: [{ type: 'none' }] },
    { ...ORDERED, foo: 1 }
  ]
  for (const condition of invalid) {
    t.notOk(Value.Check(AudienceConditionSchema, condition), JSON.stringify(condition))
    t.ok('error' in parseCondition(condition, LIMITS))
  }
})

t.test('the schema compiles in a route with Fastify\'s Ajv (strict) and resolves its own $ref', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  app.addSchema(AudienceConditionSchema)
  app.post('/conditions', { schema: { body: { $ref: 'AudienceCondition#' } } }, async (request) => request.body)
  await app.ready()
  const nestedOk = { type: 'any', conditions: [PRO, { type: 'all', conditions: [ORDERED, { type: 'trait', trait: 'plan', op: 'exists' }] }] }
  const accepted = await app.inject({ method: 'POST', url: '/conditions', payload: nestedOk })
  t.equal(accepted.statusCode, 200)
  t.same(accepted.json(), nestedOk)
  const refused = await app.inject({ method: 'POST', url: '/conditions', payload: { type: 'any', conditions: [PRO, { type: 'all', conditions: [{ type: 'none' }] }] } })
  t.equal(refused.statusCode, 400)
})

t.test('parsed conditions get defaults and are fresh objects', async (t) => {
  const input = { type: 'event', event: 'Order Completed', withinDays: 30, where: { plan: 'pro' } }
  const condition = parsed(input)
  t.same(condition, { type: 'event', event: 'Order Completed', atLeast: 1, withinDays: 30, where: { plan: 'pro' } })
  t.not(condition, input)
  t.not((condition as { where: unknown }).where, input.where)
  t.notOk('atLeast' in input, 'the input is left alone')

  t.same(parsed({ type: 'event', event: 'Signed Up', atLeast: 10_000, withinDays: 90 }), { type: 'event', event: 'Signed Up', atLeast: 10_000, withinDays: 90 })
  t.same(parsed({ type: 'event', event: 'Signed Up', atLeast: 1, withinDays: 1 }), { type: 'event', event: 'Signed Up', atLeast: 1, withinDays: 1 })
  // an empty where filters nothing: dropped, so the leaf counts from history
  t.same(parsed({ ...ORDERED, where: {} }), ORDERED)
  t.same(parsed({ type: 'trait', trait: 'plan', op: 'exists' }), { type: 'trait', trait: 'plan', op: 'exists' })
  t.same(parsed({ type: 'trait', trait: 'age', op: 'lt', value: -1.5 }), { type: 'trait', trait: 'age', op: 'lt', value: -1.5 })
  t.same(parsed({ type: 'trait', trait: 'vip', op: 'equals', value: false }), { type: 'trait', trait: 'vip', op: 'equals', value: false })
  t.same(parsed({ type: 'any', conditions: [ORDERED, PRO] }), { type: 'any', conditions: [ORDERED, PRO] })
  // names are kept as given: event names match exactly
  t.equal((parsed({ ...ORDERED, event: ' Order Completed ' }) as { event: string }).event, ' Order Completed ')
})

t.test('a where property named __proto__ stays a property', async (t) => {
  const input = JSON.parse('{"type":"event","event":"Order Completed","withinDays":30,"where":{"__proto__":"x"}}')
  const condition = parsed(input) as { where: Record<string, unknown> }
  t.ok(Object.hasOwn(condition.where, '__proto__'))
  t.equal(Object.getPrototypeOf(condition.where), Object.prototype)
  t.ok(matchesWhere(condition.where as Record<string, string>, JSON.parse('{"__proto__":"x"}')))
  t.notOk(matchesWhere(condition.where as Record<string, string>, {}))
})

t.test('every rule has a message naming the path', async (t) => {
  const cases: ReadonlyArray<readonly [unknown, string]> = [
    [undefined, 'condition: must be an object'],
    [null, 'condition: must be an object'],
    [[ORDERED], 'condition: must be an object'],
    ['event', 'condition: must be an object'],
    [{}, 'condition.type: must be one of event, trait, all, any'],
    [{ type: 'none' }, 'condition.type: must be one of event, trait, all, any'],
    [{ type: 'ALL', conditions: [ORDERED] }, 'condition.type: must be one of event, trait, all, any'],
    // groups
    [{ type: 'all' }, 'condition.conditions: must be a non-empty array'],
    [{ type: 'any', conditions: [] }, 'condition.conditions: must be a non-empty array'],
    [{ type: 'any', conditions: ORDERED }, 'condition.conditions: must be a non-empty array'],
    [{ type: 'all', conditions: [ORDERED], foo: 1 }, 'condition.foo: is not a field of a group condition'],
    [{ type: 'all', conditions: [ORDERED, null] }, 'condition.conditions[1]: must be an object'],
    [{ type: 'all', conditions: [ORDERED, { type: 'x' }] }, 'condition.conditions[1].type: must be one of event, trait, all, any'],
    // event leaves
    [{ ...ORDERED, event: undefined }, 'condition.event: must be a non-empty string'],
    [{ ...ORDERED, event: '' }, 'condition.event: must be a non-empty string'],
    [{ ...ORDERED, event: '   ' }, 'condition.event: must be a non-empty string'],
    [{ ...ORDERED, event: 'é'.repeat(101) }, 'condition.event: must be at most 200 bytes (longer event names get no history)'],
    [{ ...ORDERED, event: 42 }, 'condition.event: must be a non-empty string'],
    [{ ...ORDERED, atLeast: 0 }, 'condition.atLeast: must be an integer from 1 to 10000'],
    [{ ...ORDERED, atLeast: 10_001 }, 'condition.atLeast: must be an integer from 1 to 10000'],
    [{ ...ORDERED, atLeast: 1.5 }, 'condition.atLeast: must be an integer from 1 to 10000'],
    [{ ...ORDERED, atLeast: '2' }, 'condition.atLeast: must be an integer from 1 to 10000'],
    [{ ...ORDERED, atLeast: null }, 'condition.atLeast: must be an integer from 1 to 10000'],
    [{ ...ORDERED, withinDays: undefined }, 'condition.withinDays: must be an integer from 1 to 90 (the history kept)'],
    [{ ...ORDERED, withinDays: 0 }, 'condition.withinDays: must be an integer from 1 to 90 (the history kept)'],
    [{ ...ORDERED, withinDays: 91 }, 'condition.withinDays: must be an integer from 1 to 90 (the history kept)'],
    [{ ...ORDERED, withinDays: 7.5 }, 'condition.withinDays: must be an integer from 1 to 90 (the history kept)'],
    [{ ...ORDERED, withinDays: '30' }, 'condition.withinDays: must be an integer from 1 to 90 (the history kept)'],
    [{ ...ORDERED, where: null }, 'condition.where: must be an object mapping property names to values'],
    [{ ...ORDERED, where: ['plan'] }, 'condition.where: must be an object mapping property names to values'],
    [{ ...ORDERED, where: 'plan=pro' }, 'condition.where: must be an object mapping property names to values'],
    [{ ...ORDERED, where: { plan: null } }, 'condition.where.plan: must be a string, number or boolean'],
    [{ ...ORDERED, where: { plan: ['pro'] } }, 'condition.where.plan: must be a string, number or boolean'],
    [{ ...ORDERED, where: { plan: { is: 'pro' } } }, 'condition.where.plan: must be a string, number or boolean'],
    [{ ...ORDERED, where: { total: Number.NaN } }, 'condition.where.total: must be a string, number or boolean'],
    [{ ...ORDERED, foo: 1 }, 'condition.foo: is not a field of an event condition'],
    [{ ...ORDERED, within_days: 30 }, 'condition.within_days: is not a field of an event condition'],
    // trait leaves
    [{ ...PRO, trait: undefined }, 'condition.trait: must be a non-empty string'],
    [{ ...PRO, trait: '' }, 'condition.trait: must be a non-empty string'],
    [{ ...PRO, trait: [] }, 'condition.trait: must be a non-empty string'],
    [{ ...PRO, op: undefined }, 'condition.op: must be one of equals, exists, gt, gte, lt, lte'],
    [{ ...PRO, op: 'eq' }, 'condition.op: must be one of equals, exists, gt, gte, lt, lte'],
    [{ ...PRO, op: 'exists' }, 'condition.op: "exists" takes no value'],
    [{ ...PRO, op: 'exists', value: null }, 'condition.op: "exists" takes no value'],
    [{ ...PRO, value: undefined }, 'condition.value: op "equals" needs a string, number or boolean'],
    [{ ...PRO, value: null }, 'condition.value: op "equals" needs a string, number or boolean'],
    [{ ...PRO, value: { a: 1 } }, 'condition.value: op "equals" needs a string, number or boolean'],
    [{ ...PRO, op: 'gt', value: '5' }, 'condition.value: op "gt" needs a number'],
    [{ ...PRO, op: 'gte', value: undefined }, 'condition.value: op "gte" needs a number'],
    [{ ...PRO, op: 'lt', value: true }, 'condition.value: op "lt" needs a number'],
    [{ ...PRO, op: 'lte', value: Infinity }, 'condition.value: op "lte" needs a number'],
    [{ ...PRO, foo: 1 }, 'condition.foo: is not a field of a trait condition'],
    [{ ...PRO, where: { a: 1 } }, 'condition.where: is not a field of a trait condition'],
    // paths into groups
    [{ type: 'all', conditions: [ORDERED, { ...ORDERED, withinDays: 91 }] }, 'condition.conditions[1].withinDays: must be an integer from 1 to 90 (the history kept)'],
    [{ type: 'any', conditions: [{ ...PRO, op: 'gt' }] }, 'condition.conditions[0].value: op "gt" needs a number'],
    [{ type: 'any', conditions: [PRO, { type: 'all', conditions: [ORDERED, { ...ORDERED, where: { plan: null } }] }] }, 'condition.conditions[1].conditions[1].where.plan: must be a string, number or boolean']
  ]
  for (const [input, message] of cases) t.equal(errorOf(input), message, JSON.stringify(input) ?? 'undefined')
})

t.test('withinDays is bounded by the history kept', async (t) => {
  t.equal(errorOf({ ...ORDERED, withinDays: 31 }, { retentionDays: 30 }), 'condition.withinDays: must be an integer from 1 to 30 (the history kept)')
  t.ok('condition' in parseCondition({ ...ORDERED, withinDays: 30 }, { retentionDays: 30 }))
  t.ok('condition' in parseCondition({ ...ORDERED, withinDays: 365 }, { retentionDays: 365 }))
})

t.test('every problem is named at once', async (t) => {
  t.equal(errorOf({ ...ORDERED, event: '', atLeast: 0, withinDays: 0, foo: 1 }), [
    'condition.event: must be a non-empty string',
    'condition.atLeast: must be an integer from 1 to 10000',
    'condition.withinDays: must be an integer from 1 to 90 (the history kept)',
    'condition.foo: is not a field of an event condition'
  ].join('; '))
  t.equal(errorOf({ type: 'all', conditions: [{ ...PRO, op: 'gt' }, ORDERED, { ...ORDERED, event: '' }] }), [
    'condition.conditions[0].value: op "gt" needs a number',
    'condition.conditions[2].event: must be a non-empty string'
  ].join('; '))
  // ten messages at most, then a count
  const many = { type: 'any', conditions: Array.from({ length: 13 }, () => ({ ...ORDERED, withinDays: 0 })) }
  const message = errorOf(many)
  t.equal(message.split('; ').length, 11)
  t.match(message, /^condition\.conditions\[0\]\.withinDays: /)
  t.match(message, /condition\.conditions\[9\]\.withinDays: must be an integer from 1 to 90 \(the history kept\); and 3 more$/)
})

t.test('groups nest at most 5 deep', async (t) => {
  t.same(parsed(nested(5, ORDERED)), nested(5, ORDERED))
  const tooDeep = 'condition.conditions[0].conditions[0].conditions[0].conditions[0].conditions[0]: groups nest at most 5 deep'
  t.equal(errorOf(nested(6, ORDERED)), tooDeep)
  t.equal(errorOf(nested(9, ORDERED)), tooDeep, 'reported once, at the first group too deep')
})

t.test('at most 50 event and trait conditions in all', async (t) => {
  t.equal(MAX_CONDITIONS, 50)
  const leaves = (n: number) => Array.from({ length: n }, (_, i) => (i % 2 === 0 ? ORDERED : PRO))
  t.ok('condition' in parseCondition({ type: 'all', conditions: leaves(50) }, LIMITS))
  // counted across the whole tree
  t.ok('condition' in parseCondition({ type: 'all', conditions: [{ type: 'any', conditions: leaves(25) }, { type: 'any', conditions: leaves(25) }] }, LIMITS))
  t.equal(errorOf({ type: 'all', conditions: [{ type: 'any', conditions: leaves(25) }, { type: 'any', conditions: leaves(26) }] }),
    'condition: has 51 event and trait conditions; an audience may have at most 50')
  // named first, with the other problems after it
  t.equal(errorOf({ type: 'all', conditions: [...leaves(60), { ...ORDERED, event: '' }] }),
    'condition: has 61 event and trait conditions; an audience may have at most 50; condition.conditions[60].event: must be a non-empty string')
})

t.test('events and traits a condition refers to', async (t) => {
  const condition = parsed({
    type: 'all',
    conditions: [
      ORDERED,
      { type: 'any', conditions: [{ ...ORDERED, where: { plan: 'pro' } }, { type: 'event', event: 'Signed Up', withinDays: 7 }, PRO] },
      { type: 'trait', trait: 'age', op: 'gte', value: 18 },
      { type: 'any', conditions: [{ type: 'all', conditions: [{ type: 'trait', trait: 'plan', op: 'exists' }, { type: 'event', event: 'Cart Viewed', withinDays: 1 }] }] }
    ]
  })
  t.same([...conditionEvents(condition)], ['Order Completed', 'Signed Up', 'Cart Viewed'])
  t.same([...conditionTraits(condition)], ['plan', 'age'])
  t.same(eventLeaves(condition).map(({ path, leaf }) => [path, leaf.event, leaf.where]), [
    ['0', 'Order Completed', undefined],
    ['1.0', 'Order Completed', { plan: 'pro' }],
    ['1.1', 'Signed Up', undefined],
    ['3.0.1', 'Cart Viewed', undefined]
  ])
  const leaf = parsed(ORDERED)
  t.same(eventLeaves(leaf), [{ path: '', leaf }], 'a leaf at the root has the empty path')
  t.same([...conditionEvents(leaf)], ['Order Completed'])
  t.same([...conditionTraits(leaf)], [])
  const trait = parsed(PRO)
  t.same(eventLeaves(trait), [])
  t.same([...conditionEvents(trait)], [])
  t.same([...conditionTraits(trait)], ['plan'])
  // the paths are stable: parsing the same condition again gives the same ones
  t.same(eventLeaves(parsed(JSON.parse(JSON.stringify(condition)))).map(({ path }) => path), ['0', '1.0', '1.1', '3.0.1'])
})

t.test('where: every listed property strictly equal', async (t) => {
  const where = { plan: 'pro', total: 10, gift: false }
  t.ok(matchesWhere(where, { plan: 'pro', total: 10, gift: false }))
  t.ok(matchesWhere(where, { plan: 'pro', total: 10, gift: false, other: 'x' }), 'other properties do not matter')
  t.notOk(matchesWhere(where, { plan: 'pro', total: 10 }), 'a missing property fails')
  t.notOk(matchesWhere(where, { plan: 'pro', total: '10', gift: false }), '"10" is not 10')
  t.notOk(matchesWhere(where, { plan: 'Pro', total: 10, gift: false }), 'case matters')
  t.notOk(matchesWhere(where, { plan: 'pro', total: 10, gift: 0 }), '0 is not false')
  t.notOk(matchesWhere(where, undefined))
  t.ok(matchesWhere({}, undefined), 'no filter passes everything')
  // top-level names only, and never from Object.prototype
  t.notOk(matchesWhere({ 'product.sku': 'A1' }, { product: { sku: 'A1' } }))
  t.ok(matchesWhere({ 'product.sku': 'A1' }, { 'product.sku': 'A1' }))
  t.notOk(matchesWhere({ constructor: 'x' }, {}))
  t.notOk(matchesWhere({ toString: 'x' }, Object.create({ toString: 'x' })))
})
