// No raw PII at rest or on its way out: traits spelt like a match key (`phone_number`, `mobile`,
// `email_address`, `zip_code`, `dob`…) are hashed as the key they spell, never kept raw in a
// profile; properties named so never go into custom_data — not to Meta, not into dead letters —
// and each destination counts the properties it kept out (droppedPii).
import t from 'tap'
import { ingest, ingestDrained } from '../helpers/audience-setup.js'
import { createDestination, settledStats, startDelivery, waitFor } from '../helpers/delivery-setup.js'
import { allKeys } from '../helpers/redis.js'

const RAW = ['+1 401 555 0199', '4015550198', 'pii-one@example.com', 'pii-two@example.com', '02818', '1990-01-02', '1985-03-04', 'Smithfield']

/** Every value of every key under the prefix, as text. */
async function everything (redis: import('../../src/redis-client.js').RedisClient, prefix: string): Promise<string> {
  const parts: string[] = []
  for (const key of await allKeys(redis, `*${prefix}*`)) {
    const type = await redis.type(key)
    if (type === 'string') parts.push((await redis.getBuffer(key))?.toString('latin1') ?? '')
    else if (type === 'hash') parts.push(...Object.entries(await redis.hgetallBuffer(key)).flat().map((part) => part.toString('latin1')))
    else if (type === 'list') parts.push(...await redis.lrange(key, 0, -1))
    else if (type === 'set') parts.push(...await redis.smembers(key))
    else if (type === 'zset') parts.push(...await redis.zrange(key, 0, -1))
    else if (type === 'stream') parts.push(JSON.stringify(await redis.xrange(key, '-', '+')))
  }
  return parts.join('\n').toLowerCase()
}

t.test('traits spelt like match keys are hashed, and properties named so stay out of custom_data', async (t) => {
  const { ctx, graph } = await startDelivery(t)
  const source = await ctx.createSource()
  const destination = await createDestination(ctx, source.id, { conversionEvents: { 'Order Completed': '1111' } })
  await ingest(ctx, source.writeKey, [
    { type: 'identify', userId: 'u1', traits: { phone_number: RAW[0], mobile: RAW[1], email_address: RAW[2], 'e-mail': RAW[3], zip_code: RAW[4], dob: RAW[5], plan: 'pro' } },
    { type: 'identify', userId: 'u2', traits: { birth_date: RAW[6], city: RAW[7] } }
  ])
  await ingestDrained(ctx)
  // Conversions with PII among their properties: one delivered, one Meta refuses (dead-lettered).
  const order = (messageId: string) => ({ type: 'track', userId: 'u1', event: 'Order Completed', messageId, properties: { revenue: 10, email: RAW[2], phone: RAW[0], mobile_phone: RAW[1], name: 'Order 1', coupon: 'SAVE' } })
  await ingest(ctx, source.writeKey, [order('order-delivered')])
  await settledStats(ctx, destination.id, 3)
  graph.failNext({ kind: 'graph', code: 100, status: 400 }, 1)
  await ingest(ctx, source.writeKey, [order('order-refused')])
  // 2 identifies (filtered) and 2 conversions
  const stats = await settledStats(ctx, destination.id, 4)
  t.equal(stats.droppedPii, 6, 'three properties kept out of each conversion\'s custom_data')
  t.match(stats, { delivered: 1, deadLettered: 1, filtered: 2 })
  const failures = (await ctx.admin('GET', `/v1/destinations/${destination.id}/failures`)).json
  const sent = JSON.stringify(graph.received) + JSON.stringify(failures)
  for (const raw of RAW) t.notOk(sent.toLowerCase().includes(raw.toLowerCase()), `${raw}: not sent to Meta, not in a dead letter`)
  t.equal(graph.events('1111')[0].custom_data.coupon, 'SAVE', 'other properties go as before')

  await waitFor(async () => (await allKeys(ctx.app.redis, `${ctx.config.REDIS_PREFIX}:ingest-body:*`)).length === 0, 10_000, 'the processed bodies to be gone')
  const stored = await everything(ctx.app.redis, ctx.config.REDIS_PREFIX)
  for (const raw of RAW) t.notOk(stored.includes(raw.toLowerCase()), `${raw}: nowhere in Redis (profiles, dead letters, queues)`)
  t.match(stored, /save/, 'the dead letter\'s other properties are kept')
  const profile = await ctx.app.redis.hgetallBuffer(ctx.app.keys.profile(source.id, 'u1'))
  t.ok(profile.p !== undefined && profile.e !== undefined && profile.z !== undefined && profile.b !== undefined, 'kept as hashed match keys (phone, email, zip, birthday)')
  t.equal(profile['t:plan']?.toString(), '"pro"', 'other traits as sent')
})
