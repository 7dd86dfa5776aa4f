// Every conversion the transform lets through must be one Meta takes: checked against the
// fake Graph API's per-event validation (test/fixtures/fake-graph-validate.ts), in both formats.
import t from 'tap'
import { hashedTraitKeys } from '../../src/facebook/match-keys.js'
import { parseFacebookSettings, type FacebookSettings } from '../../src/facebook/settings.js'
import { audienceEntryConversion, transformTrack } from '../../src/facebook/transform.js'
import type { SegmentMessage } from '../../src/segment/types.js'
import { detectFormat, validateEvent } from '../fixtures/fake-graph-validate.js'

const NOW = Date.parse('2025-06-01T12:00:00.000Z')
const TIMESTAMP = '2025-06-01T11:00:00.000Z'

function settingsFor (apiFormat: string, limitedDataUse: boolean): FacebookSettings {
  const result = parseFacebookSettings({
    completeRegistrationEvents: { 'Signed Up': '1104832229607827' },
    leadEvents: { 'Lead Generated': '5504831519607222', 'Order Completed': '5504831519607222' },
    conversionEvents: {
      'Order Completed': '794041057373779',
      'Product Added': '794041057373779',
      'Product List Viewed': '794041057373779',
      'Checkout Started': '794041057373779',
      'Membership Upgraded': '794041057373779'
    },
    apiFormat,
    limitedDataUse
  })
  if ('error' in result) throw new Error(result.error)
  return result.settings
}

const traits = {
  email: ['hamsolo813@hamsolo813.com', 'HAM@example.com'],
  phone: '4011234567',
  gender: 'm',
  name: 'ham solo',
  birthday: '1997-02-16',
  address: { city: 'East Greenwich', state: 'RI', postalCode: '02818', country: 'USA' }
}

const messages: Array<Partial<SegmentMessage>> = [
  { event: 'Order Completed', properties: { revenue: 39.95, shippingMethod: '2-day', order_id: 'o1', currency: 'eur' } },
  { event: 'Order Completed', properties: { revenue: 'bad' } },
  { event: 'Product Added', properties: { product_id: 'product12356', price: 18.99, value: 18.99, category: 'Games' }, context: { traits } },
  { event: 'Product List Viewed', properties: { category: 'Games', products: [{ product_id: 1 }] }, context: { traits } },
  { event: 'Checkout Started', properties: { products: [{ product_id: 'a' }, { product_id: 2 }], value: '12.5' } },
  { event: 'Membership Upgraded', integrations: { 'Facebook Offline Conversions': { dataProcessingOptions: [[], 1, 1000] } } },
  { event: 'Membership Upgraded', integrations: { 'Facebook Offline Conversions': { dataProcessingOptions: [['LDU']] } } },
  { event: 'Signed Up', context: { traits: { firstName: 'Mary', lastName: 'Smith' } }, userId: undefined },
  { event: 'Lead Generated', context: { 'Facebook Offline Conversions': { leadId: 'l:1234567890' } }, userId: undefined },
  { event: 'Lead Generated', context: { 'Facebook Offline Conversions': { leadId: '<LEAD ADS ID>' } } }
]

for (const apiFormat of ['conversions-api', 'offline-conversions']) {
  for (const limitedDataUse of [false, true]) {
    t.test(`${apiFormat}, limitedDataUse ${limitedDataUse}: Meta would take every conversion`, async (t) => {
      const settings = settingsFor(apiFormat, limitedDataUse)
      let sent = 0
      for (const [index, fields] of messages.entries()) {
        const message = {
          type: 'track',
          messageId: `m-${index}`,
          userId: 'hamsolo813',
          timestamp: TIMESTAMP,
          originalTimestamp: TIMESTAMP,
          receivedAt: TIMESTAMP,
          ...fields
        } as SegmentMessage
        const options = { now: NOW, audienceProperties: { vip: true } }
        for (const result of transformTrack(message, settings, options)) {
          if (result.kind !== 'conversion') continue
          sent++
          const event = result.conversion.payload
          t.equal(detectFormat([event]), apiFormat, `${message.event} is recognised as ${apiFormat}`)
          t.same(validateEvent(event, apiFormat as 'conversions-api', NOW / 1000), undefined, `${message.event} #${index}`)
        }
      }
      t.ok(sent >= messages.length, 'every message but the bad Purchase sent, Order Completed twice')
      const entry = audienceEntryConversion({
        audienceKey: 'order_completed_last_30days',
        datasetId: '1234',
        messageId: 'identify-1',
        timestamp: TIMESTAMP,
        userId: 'hamsolo813',
        profileKeys: hashedTraitKeys(traits)
      }, settings, NOW)
      if (entry.kind !== 'conversion') throw new Error(entry.message)
      t.same(validateEvent(entry.conversion.payload, apiFormat as 'conversions-api', NOW / 1000), undefined, 'audience entry')
    })
  }
}
