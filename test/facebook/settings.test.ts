import t from 'tap'
import {
  DEFAULT_GRAPH_VERSION,
  DESTINATION_NAME,
  DESTINATION_TYPE,
  FacebookSettingsSchema,
  graphVersion,
  LEGACY_GRAPH_VERSION,
  parseFacebookSettings,
  type FacebookSettings
} from '../../src/facebook/settings.js'

function parsed (input: unknown): FacebookSettings {
  const result = parseFacebookSettings(input)
  if ('error' in result) throw new Error(result.error)
  return result.settings
}

function errorOf (input: unknown): string {
  const result = parseFacebookSettings(input)
  if ('settings' in result) throw new Error('expected an error')
  return result.error
}

t.test('names and schema id', async (t) => {
  t.equal(DESTINATION_NAME, 'Facebook Offline Conversions')
  t.equal(DESTINATION_TYPE, 'facebook-offline-conversions')
  t.equal(DEFAULT_GRAPH_VERSION, 'v26.0', 'the current version (v21.0 expires on 2027-01-21)')
  t.equal(Reflect.get(FacebookSettingsSchema, '$id'), 'FacebookSettings', 'a named component in OpenAPI')
})

t.test('an empty object gets every default of DESIGN.md', async (t) => {
  t.same(parsed({}), {
    completeRegistrationEvents: {},
    leadEvents: {},
    conversionEvents: {},
    valueFieldIdentifier: 'value',
    limitedDataUse: false,
    apiFormat: 'conversions-api',
    apiVersion: 'v26.0',
    uploadTag: 'Segment',
    sendAudienceProperties: true,
    audienceEntryEvents: {},
    consentCategories: [],
    requireConsent: false
  })
  t.notOk('testEventCode' in parsed({}), 'testEventCode stays unset')
})

t.test('the seed settings and every setting given are kept as given', async (t) => {
  const input = {
    completeRegistrationEvents: { 'Signed Up': '1104832229607827' },
    leadEvents: { 'Lead Generated': '5504831519607222' },
    conversionEvents: { 'Order Completed': '794041057373779', 'Product Added': '794041057373779' },
    valueFieldIdentifier: 'price',
    limitedDataUse: true,
    apiFormat: 'offline-conversions',
    apiVersion: 'v23.0',
    testEventCode: 'TEST123',
    uploadTag: 'store-upload',
    sendAudienceProperties: false,
    audienceEntryEvents: { order_completed_last_30days: '1234' },
    consentCategories: ['Advertising', 'C0004'],
    requireConsent: true
  }
  t.same(parsed(input), input)
})

t.test('the input is not changed', async (t) => {
  const input = { conversionEvents: { 'Order Completed': '1' } }
  parsed(input)
  t.same(input, { conversionEvents: { 'Order Completed': '1' } })
})

t.test('errors name the field and the rule', async (t) => {
  const cases: Array<[string, unknown, string]> = [
    ['a map entry that is not digits', { conversionEvents: { 'Order Completed': 'abc' } },
      'settings.conversionEvents["Order Completed"]: a dataset id is a string of digits'],
    ['a dataset id sent as a JSON number', { leadEvents: { 'Lead Generated': 5504831519607222 } },
      'settings.leadEvents["Lead Generated"]: a dataset id is a string of digits'],
    ['an empty dataset id', { completeRegistrationEvents: { 'Signed Up': '' } },
      'settings.completeRegistrationEvents["Signed Up"]: a dataset id is a string of digits'],
    ['an audience entry with a bad dataset id', { audienceEntryEvents: { vip: 'x1' } },
      'settings.audienceEntryEvents["vip"]: a dataset id is a string of digits'],
    ['a key with pointer characters is shown as written', { conversionEvents: { 'a/b~c': 'x' } },
      'settings.conversionEvents["a/b~c"]: a dataset id is a string of digits'],
    ['a map that is an array', { conversionEvents: [] },
      'settings.conversionEvents: must be an object mapping event names to dataset ids'],
    ['a map that is a string', { audienceEntryEvents: 'x' },
      'settings.audienceEntryEvents: must be an object mapping audience keys to dataset ids'],
    ['an unknown value field', { valueFieldIdentifier: 'cost' }, 'settings.valueFieldIdentifier: must be "value" or "price"'],
    ['a non-boolean LDU', { limitedDataUse: 'yes' }, 'settings.limitedDataUse: must be a boolean'],
    ['an unknown format', { apiFormat: 'capi' }, 'settings.apiFormat: must be "conversions-api" or "offline-conversions"'],
    ['a version without v', { apiVersion: '21.0' }, 'settings.apiVersion: must be a Graph API version such as "v26.0"'],
    ['an empty test event code', { testEventCode: '' }, 'settings.testEventCode: must be a non-empty string'],
    ['a numeric upload tag', { uploadTag: 5 }, 'settings.uploadTag: must be a non-empty string'],
    ['a non-boolean audience switch', { sendAudienceProperties: 1 }, 'settings.sendAudienceProperties: must be a boolean'],
    ['consent categories not a list', { consentCategories: 'Advertising' }, 'settings.consentCategories: must be an array of distinct consent category ids (non-empty strings, at most 50)'],
    ['a repeated consent category', { consentCategories: ['Advertising', 'Advertising'] }, 'settings.consentCategories: must be an array of distinct consent category ids (non-empty strings, at most 50)'],
    ['a non-boolean requireConsent', { requireConsent: 'true' }, 'settings.requireConsent: must be a boolean'],
    ['an unknown setting (a typo)', { conversionEvent: {} }, 'settings.conversionEvent: is not a setting of this destination'],
    ['not an object', null, 'settings: must be an object'],
    ['an array', [], 'settings: must be an object'],
    ['a string', 'x', 'settings: must be an object']
  ]
  for (const [name, input, expected] of cases) {
    t.equal(errorOf(input), expected, name)
  }
})

t.test('several problems are all reported, each once', async (t) => {
  const error = errorOf({ leadEvents: { a: 'x' }, valueFieldIdentifier: 'cost' })
  t.match(error, 'settings.leadEvents["a"]: a dataset id is a string of digits')
  t.match(error, 'settings.valueFieldIdentifier: must be "value" or "price"')
  t.equal(error.split('; ').length, 2)
})

t.test('graphVersion: the legacy format always uses v16.0', async (t) => {
  t.equal(graphVersion(parsed({})), DEFAULT_GRAPH_VERSION)
  t.equal(graphVersion(parsed({ apiVersion: 'v22.0' })), 'v22.0')
  t.equal(graphVersion(parsed({ apiFormat: 'offline-conversions', apiVersion: 'v22.0' })), LEGACY_GRAPH_VERSION)
  t.equal(LEGACY_GRAPH_VERSION, 'v16.0')
})

t.test('settings nested thousands of levels deep: an error naming the setting, not a stack overflow', async (t) => {
  // Found by the fuzz tests (test/fuzz/admin.test.ts): structuredClone overflowed, a 500.
  for (const levels of [3, 5000, 50_000]) {
    const arrays = JSON.parse(`{"leadEvents":${'['.repeat(levels)}${']'.repeat(levels)}}`)
    t.equal(errorOf(arrays), 'settings.leadEvents: must be an object mapping event names to dataset ids', `${levels} levels of arrays`)
    const objects = JSON.parse(`{"conversionEvents":{"Order Completed":${'{"d":'.repeat(levels)}1${'}'.repeat(levels)}},"limitedDataUse":{"x":{}},"nope":[[1]]}`)
    t.equal(errorOf(objects), 'settings.conversionEvents: must be an object mapping event names to dataset ids; settings.limitedDataUse: must be a boolean; settings.nope: is not a setting of this destination', `${levels} levels of objects, with others`)
  }
  t.same(parsed({ conversionEvents: { 'Order Completed': '1' }, apiVersion: 'v21.0' }).conversionEvents, { 'Order Completed': '1' }, 'two levels are a map, as before')
})
