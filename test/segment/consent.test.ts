import t from 'tap'
import { consentAllows, messageConsent } from '../../src/segment/consent.js'
import type { SegmentMessage } from '../../src/segment/types.js'

const message = (context: unknown): SegmentMessage => ({ type: 'track', messageId: 'm', event: 'E', timestamp: 'x', originalTimestamp: 'x', receivedAt: 'x', context: context as Record<string, unknown> })

t.test('a message\'s consent: context.consent.categoryPreferences, boolean entries only', async (t) => {
  t.same(messageConsent(message({ consent: { categoryPreferences: { Advertising: true, Analytics: false, Odd: 'yes' } } })), { Advertising: true, Analytics: false })
  t.equal(messageConsent(message(undefined)), undefined)
  t.equal(messageConsent(message({ consent: {} })), undefined)
  t.equal(messageConsent(message({ consent: { categoryPreferences: ['Advertising'] } })), undefined)
  t.same(messageConsent(message({ consent: { categoryPreferences: {} } })), {}, 'an empty object is a consent to nothing')
})

t.test('Segment\'s rule: every named category true; without consent, only when not required', async (t) => {
  const rule = { categories: ['Advertising', 'Marketing'], requireConsent: false }
  const strict = { ...rule, requireConsent: true }
  t.ok(consentAllows(rule, { Advertising: true, Marketing: true, Other: false }))
  t.notOk(consentAllows(rule, { Advertising: true, Marketing: false }))
  t.notOk(consentAllows(rule, { Advertising: true }), 'a missing category is no consent')
  t.notOk(consentAllows(rule, { Advertising: true, constructor: true }), 'own entries only')
  t.ok(consentAllows(rule, undefined), 'unknown consent flows (Segment)')
  t.notOk(consentAllows(strict, undefined), '…unless the destination requires consent')
  t.ok(consentAllows({ categories: [], requireConsent: true }, undefined), 'no category named: everything')
})
