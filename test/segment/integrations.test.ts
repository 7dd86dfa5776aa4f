import t from 'tap'
import { destinationOptions, isDestinationEnabled } from '../../src/segment/integrations.js'

const NAME = 'Facebook Offline Conversions'

t.test('isDestinationEnabled follows Segment: All defaults on, the own entry wins', async (t) => {
  const cases: Array<[string, Record<string, unknown> | undefined, boolean]> = [
    ['no integrations object', undefined, true],
    ['empty integrations object', {}, true],
    ['All: true', { All: true }, true],
    ['All: false', { All: false }, false],
    ['All: false, own true', { All: false, [NAME]: true }, true],
    ['All: false, own options object', { All: false, [NAME]: { dataProcessingOptions: [['LDU']] } }, true],
    ['All: false, own empty object', { All: false, [NAME]: {} }, true],
    ['own false', { [NAME]: false }, false],
    ['All: true, own false', { All: true, [NAME]: false }, false],
    ['own true alone', { [NAME]: true }, true],
    ['other destinations do not matter', { 'Google Analytics': false, Mixpanel: true }, true],
    ['All: false with another destination on', { All: false, Mixpanel: true }, false],
    ['names are case-sensitive: a lower-case entry is another destination', { 'facebook offline conversions': false }, true],
    ['names are case-sensitive: `all` is not `All`', { all: false }, true],
    ['own null says nothing: All decides (on)', { [NAME]: null }, true],
    ['own null says nothing: All decides (off)', { All: false, [NAME]: null }, false],
    ['own "false" string is not false', { [NAME]: 'false' }, true],
    ['own array is not an options object', { All: false, [NAME]: [] }, false],
    ['All must be exactly false to turn everything off', { All: 0 }, true]
  ]
  for (const [name, integrations, expected] of cases) {
    t.equal(isDestinationEnabled(integrations, NAME), expected, name)
  }
})

t.test('an inherited name is not an entry', async (t) => {
  const integrations = Object.create({ [NAME]: false, All: true }) as Record<string, unknown>
  t.equal(isDestinationEnabled(integrations, NAME), true)
  t.equal(destinationOptions(integrations, NAME), undefined)
})

t.test('destinationOptions returns the object value of the own entry', async (t) => {
  const options = { dataProcessingOptions: [[], 1, 1000] }
  t.equal(destinationOptions({ [NAME]: options }, NAME), options)
  t.equal(destinationOptions({ [NAME]: true }, NAME), undefined, 'true carries no options')
  t.equal(destinationOptions({ [NAME]: false }, NAME), undefined)
  t.equal(destinationOptions({ [NAME]: [1] }, NAME), undefined, 'an array is not options')
  t.equal(destinationOptions({ [NAME]: null }, NAME), undefined)
  t.equal(destinationOptions({ All: { x: 1 } }, NAME), undefined, 'All never gives options')
  t.equal(destinationOptions({ 'facebook offline conversions': { x: 1 } }, NAME), undefined, 'case-sensitive')
  t.equal(destinationOptions(undefined, NAME), undefined)
})
