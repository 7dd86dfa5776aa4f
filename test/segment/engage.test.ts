import t from 'tap'
import { audienceChange } from '../../src/segment/engage.js'
import type { SegmentMessage } from '../../src/segment/types.js'
import seed from '../fixtures/seed-examples.json' with { type: 'json' }

const base = { messageId: 'm', timestamp: '2026-01-01T00:00:00.000Z', originalTimestamp: '2026-01-01T00:00:00.000Z', receivedAt: '2026-01-01T00:00:00.000Z' }
const identify = (extra: Partial<SegmentMessage>): SegmentMessage => ({ ...base, type: 'identify', userId: 'u1', ...extra })

t.test('the seed\'s Engage identify is an audience change', async (t) => {
  const engage = seed.messages.find((m) => m.type === 'identify')!
  t.same(audienceChange({ ...base, ...engage } as SegmentMessage), { computationId: 'aud_example', key: 'order_completed_last_30days', member: true })
})

t.test('false is a change too (the user left)', async (t) => {
  const change = audienceChange(identify({ traits: { vip: false }, context: { personas: { computation_class: 'audience', computation_key: 'vip' } } }))
  t.same(change, { computationId: undefined, key: 'vip', member: false })
})

t.test('anything else is not one', async (t) => {
  const personas = { computation_class: 'audience', computation_key: 'vip', computation_id: 'aud_1' }
  t.equal(audienceChange(identify({ traits: { vip: true } })), undefined, 'no context.personas')
  t.equal(audienceChange(identify({ traits: { vip: 'true' }, context: { personas } })), undefined, 'not a boolean (Journeys v1 sends strings)')
  t.equal(audienceChange(identify({ traits: { vip: true }, context: { personas: { ...personas, computation_class: 'trait' } } })), undefined, 'a computed trait')
  t.equal(audienceChange(identify({ traits: { other: true }, context: { personas } })), undefined, 'the key is not in the traits')
  t.equal(audienceChange({ ...base, type: 'track', event: 'Audience Entered', userId: 'u1', context: { personas } }), undefined, 'a track')
})
