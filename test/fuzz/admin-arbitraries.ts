// Generators for the admin API's free-form inputs: destination bodies and settings, audience
// bodies and conditions, as JSON text (see arbitraries.ts).
import fc from 'fast-check'
import { keyText, maybe, objectText, poisonText, prototypeKeyText, stringText, valueText, type Json } from './arbitraries.js'

const q = (value: unknown): Json => JSON.stringify(value)

// ─── Destination settings ───────────────────────────────────────────────────────────────────────
const datasetIdText: fc.Arbitrary<Json> = fc.oneof(
  { weight: 6, arbitrary: fc.stringMatching(/^[0-9]{1,16}$/).map(q) },
  { weight: 1, arbitrary: fc.constantFrom('""', '"0"', '"007"', q('9'.repeat(300)), '"١٢٣"', '"12a"', '" 12"', '12', 'null', '{}', '[]') },
  { weight: 1, arbitrary: valueText }
)
const eventNameKey: fc.Arbitrary<Json> = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom('Order Completed', 'Product Viewed', 'Lead', 'constructor', 'toString', 'hasOwnProperty', '', ' ', 'E'.repeat(300), '😀', 'e\u0301', '\ud800').map(q) },
  { weight: 3, arbitrary: keyText }
)
const eventMapText: fc.Arbitrary<Json> = fc.oneof(
  { weight: 6, arbitrary: fc.array(fc.tuple(eventNameKey, datasetIdText), { maxLength: 5 }).map(objectText) },
  { weight: 1, arbitrary: valueText },
  { weight: 1, arbitrary: poisonText }
)
const SETTING_VALUES: Record<string, fc.Arbitrary<Json>> = {
  completeRegistrationEvents: eventMapText,
  leadEvents: eventMapText,
  conversionEvents: eventMapText,
  audienceEntryEvents: eventMapText,
  valueFieldIdentifier: fc.oneof(fc.constantFrom('"value"', '"price"', '"Value"', '""', 'null', '1'), valueText),
  limitedDataUse: fc.oneof(fc.constantFrom('true', 'false', '"true"', '0', 'null'), valueText),
  apiFormat: fc.oneof(fc.constantFrom('"conversions-api"', '"offline-conversions"', '"legacy"', 'null'), valueText),
  apiVersion: fc.oneof(fc.constantFrom('"v21.0"', '"v16.0"', '"v26.0"', '"v0.0"', '"v99.9"', '"v1.0"', '"v021.00"', '"21.0"', '"v21"', '"v21.0\\n"', q('v' + '9'.repeat(400) + '.0'), 'null'), stringText),
  testEventCode: fc.oneof(fc.constantFrom('"TEST123"', '""', 'null', '1'), stringText),
  uploadTag: fc.oneof(fc.constantFrom('"Segment"', '""', 'null'), stringText),
  sendAudienceProperties: fc.oneof(fc.constantFrom('true', 'false', 'null', '"false"'), valueText),
  consentCategories: fc.oneof(fc.constantFrom('[]', '["Advertising"]'), valueText),
  requireConsent: fc.oneof(fc.constantFrom('true', 'false'), valueText)
}
const settingEntry: fc.Arbitrary<readonly [Json, Json]> = fc.oneof(
  { weight: 28, arbitrary: fc.constantFrom(...Object.keys(SETTING_VALUES)).chain((name) => SETTING_VALUES[name].map((value) => [q(name), value] as const)) },
  { weight: 1, arbitrary: fc.tuple(keyText, valueText) },
  { weight: 1, arbitrary: fc.tuple(prototypeKeyText, valueText) }
)
export const settingsText: fc.Arbitrary<Json> = fc.oneof(
  { weight: 10, arbitrary: fc.array(settingEntry, { maxLength: 8 }).map(objectText) },
  { weight: 1, arbitrary: valueText },
  { weight: 1, arbitrary: poisonText }
)
export const destinationBody: fc.Arbitrary<Json> = fc.oneof(
  {
    weight: 10,
    arbitrary: fc.tuple(
      fc.oneof({ weight: 10, arbitrary: fc.constant('"facebook-offline-conversions"') }, { weight: 1, arbitrary: valueText }),
      maybe(fc.oneof({ weight: 4, arbitrary: stringText }, { weight: 1, arbitrary: valueText }), 0.3),
      maybe(fc.oneof({ weight: 4, arbitrary: fc.constantFrom('true', 'false') }, { weight: 1, arbitrary: valueText }), 0.3),
      maybe(settingsText, 0.9),
      maybe(fc.tuple(keyText, valueText), 0.05)
    ).map(([type, name, enabled, settings, extra]) => objectText([
      ['"type"', type],
      ...(name === null ? [] : [['"name"', name] as const]),
      ...(enabled === null ? [] : [['"enabled"', enabled] as const]),
      ...(settings === null ? [] : [['"settings"', settings] as const]),
      ...(extra === null ? [] : [extra])
    ]))
  },
  { weight: 1, arbitrary: valueText },
  { weight: 1, arbitrary: poisonText }
)

// ─── Audience conditions ────────────────────────────────────────────────────────────────────────
const TRAITS = ['plan', 'age', 'vip', 'constructor', 'toString', 'hasOwnProperty', 'tier', 'email', 'first_name', 'phone_number', 'a:vip', 't:plan', '😀', 'e\u0301', '\ud800', ' x ']
const EVENTS = ['Order Completed', 'Signed Up', 'constructor', 'toString', 'E'.repeat(200), 'é'.repeat(100), '😀', 'e\u0301', '\ud800', '\u202eabc', 'h:1']
const WILD_TRAITS = ['__proto__', '', ' ', 'x'.repeat(10_000)]
const WILD_EVENTS = ['__proto__', 'E'.repeat(201), 'é'.repeat(101), ' ', '']
const propertyValue = fc.oneof(fc.constantFrom('"USD"', '5', 'true', '0', '-0', '1e308', '""', '"\\ud800"'), stringText, fc.double({ noNaN: true, noDefaultInfinity: true }).map((n) => JSON.stringify(n)))

/**
 * Conditions: mostly well-formed trees whose names and values are adversarial (so that many are
 * accepted and then evaluated by the workers), now and then malformed anywhere.
 */
const { condition: conditionText } = fc.letrec<{ condition: Json, leaf: Json, group: Json, wild: Json }>((tie) => ({
  condition: fc.oneof({ depthSize: 'small', withCrossShrink: true }, { weight: 12, arbitrary: tie('leaf') }, { weight: 4, arbitrary: tie('group') }, { weight: 2, arbitrary: tie('wild') }),
  leaf: fc.oneof(
    fc.record({
      event: fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...EVENTS).map(q) }, { weight: 2, arbitrary: stringText.filter((text) => JSON.parse(text).trim() !== '') }),
      atLeast: maybe(fc.constantFrom('1', '2', '3', '10000'), 0.5),
      withinDays: fc.constantFrom('1', '7', '30', '90'),
      where: maybe(fc.array(fc.tuple(fc.oneof(fc.constantFrom('currency', 'revenue', 'constructor', 'toString', '').map(q), keyText.filter((key) => !/proto/i.test(key))), propertyValue), { maxLength: 3 }).map(objectText), 0.3)
    }).map(({ event, atLeast, withinDays, where }) => objectText([['"type"', '"event"'], ['"event"', event], ...(atLeast === null ? [] : [['"atLeast"', atLeast] as const]), ['"withinDays"', withinDays], ...(where === null ? [] : [['"where"', where] as const])])),
    fc.record({
      trait: fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...TRAITS).map(q) }, { weight: 2, arbitrary: stringText.filter((text) => JSON.parse(text).trim() !== '') }),
      op: fc.constantFrom('equals', 'exists', 'gt', 'gte', 'lt', 'lte'),
      equals: propertyValue,
      number: fc.oneof(fc.constantFrom('10', '2', '0', '-0', '1e308', '-1e308', '5e-324'), fc.double({ noNaN: true, noDefaultInfinity: true }).map((n) => JSON.stringify(n)))
    }).map(({ trait, op, equals, number }) => objectText([['"type"', '"trait"'], ['"trait"', trait], ['"op"', q(op)], ...(op === 'exists' ? [] : [['"value"', op === 'equals' ? equals : number] as const])]))
  ),
  group: fc.tuple(fc.constantFrom('"all"', '"any"'), fc.array(tie('condition'), { minLength: 1, maxLength: 4 })).map(([type, conditions]) => `{"type":${type},"conditions":[${conditions.join(',')}]}`),
  // Malformed: wrong types, out-of-range counts, unknown fields and ops, empty groups, names refused.
  wild: fc.oneof(
    fc.record({
      event: fc.oneof(fc.constantFrom(...WILD_EVENTS).map(q), valueText),
      atLeast: maybe(fc.oneof(fc.constantFrom('0', '10001', '1.5', '-1', '"1"', 'null'), valueText), 0.5),
      withinDays: fc.oneof(fc.constantFrom('91', '0', '1e400', '"30"', 'null'), valueText),
      where: maybe(fc.oneof(fc.array(fc.tuple(fc.oneof(fc.constantFrom('__proto__').map(q), keyText), fc.oneof(fc.constantFrom('null', '{}', '[]'), valueText)), { maxLength: 3 }).map(objectText), valueText), 0.4)
    }).map(({ event, atLeast, withinDays, where }) => objectText([['"type"', '"event"'], ['"event"', event], ...(atLeast === null ? [] : [['"atLeast"', atLeast] as const]), ['"withinDays"', withinDays], ...(where === null ? [] : [['"where"', where] as const])])),
    fc.record({
      trait: fc.oneof(fc.constantFrom(...WILD_TRAITS).map(q), valueText),
      op: fc.oneof(fc.constantFrom('EQUALS', 'contains', 'exists', 'gt').map(q), valueText),
      value: maybe(fc.oneof(fc.constantFrom('"10"', 'null', '1e400', '{}'), valueText), 0.8),
      extra: maybe(fc.tuple(keyText, valueText), 0.3)
    }).map(({ trait, op, value, extra }) => objectText([['"type"', '"trait"'], ['"trait"', trait], ['"op"', op], ...(value === null ? [] : [['"value"', value] as const]), ...(extra === null ? [] : [extra])])),
    fc.tuple(fc.constantFrom('"none"', '"ALL"', 'null'), fc.array(tie('condition'), { maxLength: 2 })).map(([type, conditions]) => `{"type":${type},"conditions":[${conditions.join(',')}]}`),
    fc.constantFrom('{"type":"all","conditions":[]}', '{"type":"any"}', '[]', 'null'),
    // past the limits: 6 groups deep, 51 leaves
    fc.constant('{"type":"all","conditions":[{"type":"all","conditions":[{"type":"all","conditions":[{"type":"all","conditions":[{"type":"all","conditions":[{"type":"all","conditions":[{"type":"trait","trait":"plan","op":"exists"}]}]}]}]}]}]}'),
    fc.constant(`{"type":"any","conditions":[${Array.from({ length: 51 }, () => '{"type":"trait","trait":"plan","op":"exists"}').join(',')}]}`),
    valueText
  )
}))

const NAMES = ['VIP', 'Buyers', 'Fz Tier', 'Order Completed Last 30days', 'Café Crème', 'HighValue HTTPServer', 'İstanbul', 'e\u0301te', 'ﬁne', '١٢٣', '😀 fans', 'ß']

export function audienceBody (destinationIds: string[]): fc.Arbitrary<Json> {
  return fc.oneof(
    {
      weight: 10,
      arbitrary: fc.record({
        name: fc.oneof(
          { weight: 6, arbitrary: fc.tuple(fc.constantFrom(...NAMES), fc.string({ maxLength: 6 })).map(([name, tail]) => q(`${name} ${tail}`)) },
          { weight: 1, arbitrary: fc.constantFrom('constructor', '__proto__', 'email', 'First Name', '😀', '   ', 'x'.repeat(201)).map(q) },
          { weight: 1, arbitrary: stringText }
        ),
        key: maybe(fc.oneof({ weight: 4, arbitrary: fc.constantFrom('vip', 'tiers', 'fz_key', 'constructor', 'to_string', 'order_completed_30d', 'café').map(q) }, { weight: 1, arbitrary: fc.constantFrom('__proto__', 'email', 'first_name', '', 'A B', 'x'.repeat(101)).map(q) }, { weight: 1, arbitrary: stringText }), 0.3),
        condition: fc.oneof({ weight: 20, arbitrary: conditionText }, { weight: 1, arbitrary: poisonText }),
        schedule: maybe(fc.oneof(fc.constantFrom('{"every":"PT15M"}', '{"every":"PT1M"}', '{"every":"PT59S"}', '{"every":"P1D"}', '{"every":"P1M"}', '{"every":"PT0S"}', '{"every":"-PT15M"}', '{}', '{"every":"PT15M","x":1}'), valueText), 0.3),
        destinations: maybe(fc.oneof({ weight: 4, arbitrary: fc.constant(q(destinationIds)) }, { weight: 1, arbitrary: fc.constantFrom('[]', '["dst_nope"]', '[1]') }, { weight: 1, arbitrary: valueText }), 0.3)
      }).map(({ name, key, condition, schedule, destinations }) => objectText([
        ['"name"', name], ['"condition"', condition],
        ...(key === null ? [] : [['"key"', key] as const]),
        ...(schedule === null ? [] : [['"schedule"', schedule] as const]),
        ...(destinations === null ? [] : [['"destinations"', destinations] as const])
      ]))
    },
    { weight: 1, arbitrary: valueText }
  )
}
