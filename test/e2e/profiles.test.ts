// Profiles end to end: an identify updates the user's profile (traits merged, match keys only as
// their normalised SHA-256 hashes: every key in Redis is read back and no raw PII is anywhere),
// an anonymousId is linked to the userId once both are known, and identify calls from a real
// Segment Engage workspace (with context.personas) set audience and computed-trait properties
// that our own audiences read like any trait.
import { createHash } from 'node:crypto'
import t from 'tap'
import { buildTestApp, type TestContext } from '../helpers/app.js'
import { allMembers, createAudience, identifyBy, ingest, ingestDrained, ORDERED_30_DAYS, trackBy, waitFor, waitForAudience, waitForIdle } from '../helpers/audience-setup.js'
import { freshPrefix } from '../helpers/ingest-queue.js'
import { startTestRedis } from '../helpers/redis.js'
import { primariesOf } from '../../src/redis-client.js'

const redis = await startTestRedis()
t.teardown(() => redis.close())

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex')

/** Every key of the app's prefixes with every value it holds, read by its type: what someone reading Redis sees. */
async function redisDump (ctx: TestContext): Promise<{ keys: string[], bytes: Buffer }> {
  const { redis } = ctx.app
  const keys: string[] = []
  const parts: Buffer[] = []
  // Every primary of a cluster; queue keys under `{prefix}` (one Redis) or `{prefix:kind}` (a cluster).
  for (const [node, pattern] of primariesOf(redis).flatMap((node) => [[node, `${ctx.config.REDIS_PREFIX}:*`], [node, `{${ctx.config.REDIS_PREFIX}[}:]*`]] as const)) {
    let cursor = '0'
    do {
      const [next, found] = await node.scanBuffer(cursor, 'MATCH', pattern, 'COUNT', 1000)
      for (const key of found) {
        keys.push(key.toString())
        parts.push(key)
        const type = await redis.type(key)
        switch (type) {
          case 'string': parts.push((await redis.getBuffer(key)) ?? Buffer.alloc(0)); break
          case 'hash': for (const [field, value] of Object.entries(await redis.hgetallBuffer(key))) parts.push(Buffer.from(field), value); break
          case 'list': parts.push(...await redis.lrangeBuffer(key, 0, -1)); break
          case 'set': parts.push(...await redis.smembersBuffer(key)); break
          case 'zset': parts.push(...await redis.zrangeBuffer(key, 0, -1, 'WITHSCORES')); break
          case 'stream': for (const [id, fields] of await redis.xrangeBuffer(key, '-', '+')) parts.push(id, ...fields); break
          case 'none': break // deleted since the scan (a lock, a finished job)
          default: throw new Error(`key ${key.toString()} has a type this dump does not read: ${type}`)
        }
        parts.push(Buffer.from('\n'))
      }
      cursor = next.toString()
    } while (cursor !== '0')
  }
  return { keys, bytes: Buffer.concat(parts) }
}

const PII_TRAITS = {
  email: 'Ada.Lovelace@Example.com',
  phone: '(650) 555-1212',
  firstName: 'Augusta',
  lastName: 'Byron-King',
  name: 'Augusta Ada Byron-King',
  gender: 'female',
  birthday: '1985-12-10',
  address: { street: '12 St James Square', city: 'Marylebone', state: 'California', postalCode: '94105-1234', country: 'United States' }
}

// The raw values, and the normalised forms that are hashed: neither may be stored.
const RAW_VALUES = [
  'Ada.Lovelace@Example.com', 'ada.lovelace@example.com', '(650) 555-1212', '6505551212', '16505551212',
  'Augusta', 'augusta', 'Byron-King', 'byronking', 'Augusta Ada Byron-King',
  '1985-12-10', '19851210', '12 St James Square', 'Marylebone', 'marylebone', '94105-1234', '94105',
  // other spellings of match-key traits (src/facebook/trait-spellings.ts)
  '+1 415 555 0100', '4155550100', '14155550100', 'SW1A 1AA', 'Great Britain'
]

t.test('an identify keeps traits, and match keys only as their hashes: no raw PII anywhere in Redis', async (t) => {
  const ctx = await buildTestApp(t, { redis: freshPrefix(redis) })
  const source = await ctx.createSource()
  // An audience reading a trait: its data is in Redis too.
  const pro = await createAudience(ctx, source.id, { name: 'Pro users', condition: { type: 'trait', trait: 'plan', op: 'equals', value: 'pro' } })
  await ingest(ctx, source.writeKey, [
    // other spellings of the address's parts: the address wins, and they are not stored
    identifyBy('user-ada', { ...PII_TRAITS, plan: 'pro', logins: 3, zip_code: 'SW1A 1AA', Country_Code: 'Great Britain' }, { anonymousId: 'anon-ada', context: { traits: { email: PII_TRAITS.email } } }),
    // snake_case and other spellings of match-key traits are the same PII: `mobile` is the phone
    identifyBy('user-ada', { first_name: 'Augusta', last_name: 'Byron-King', mobile: '+1 415 555 0100', company: 'Analytical Engines' })
  ])
  await waitForAudience(ctx, pro.id, (a) => a.size === 1, 'the user to join the audience')
  await ingestDrained(ctx)

  const profile = await ctx.app.profiles.get(source.id, 'user-ada')
  t.same(profile.matchKeys, {
    em: [sha256('ada.lovelace@example.com')],
    ph: [sha256('14155550100')],
    ge: sha256('f'),
    fn: sha256('augusta'),
    ln: sha256('byronking'),
    ct: sha256('marylebone'),
    st: sha256('ca'),
    zp: sha256('94105'),
    country: sha256('us'),
    db: sha256('19851210')
  }, 'match keys normalised and hashed, as Meta wants them (the legacy birthday parts only where a destination needs them)')
  t.same(profile.traits, { plan: 'pro', logins: 3, company: 'Analytical Engines' }, 'other traits merged across identifies, as sent')
  t.same(profile.audiences, { pro_users: true }, 'the audience is a user property of the profile')

  const { keys, bytes } = await redisDump(ctx)
  t.ok(keys.some((key) => key.includes(':profile:')), 'the dump reads the profiles')
  t.ok(bytes.includes('Analytical Engines'), 'the dump sees stored trait values')
  for (const raw of RAW_VALUES) t.notOk(bytes.includes(raw), `"${raw}" is nowhere in Redis`)
  for (const [name, hex] of Object.entries(profile.matchKeys)) {
    const hashes = Array.isArray(hex) ? hex : [hex as string]
    for (const hash of hashes) t.ok(bytes.includes(Buffer.from(hash, 'hex')), `the ${name} hash is stored`)
  }
  t.notOk(keys.some((key) => /:ingest:[0-9]+$/.test(key)), 'no processed ingest job is kept (they carry raw traits)')

  // A later identify merges: new traits added, old ones and match keys kept, a new email replaces the hash.
  await ingest(ctx, source.writeKey, [identifyBy('user-ada', { email: 'ada@engines.example', plan: 'enterprise' })])
  await waitForAudience(ctx, pro.id, (a) => a.size === 0, 'the user to leave the audience (plan changed)')
  const merged = await ctx.app.profiles.get(source.id, 'user-ada')
  t.same(merged.matchKeys.em, [sha256('ada@engines.example')], 'the new email\'s hash')
  t.equal(merged.matchKeys.fn, sha256('augusta'), 'other match keys kept')
  t.same(merged.traits, { plan: 'enterprise', logins: 3, company: 'Analytical Engines' })
  t.same(merged.audiences, { pro_users: false })
})

t.test('an anonymousId is linked to the userId: later anonymous events count for the user', async (t) => {
  const ctx = await buildTestApp(t, { redis: freshPrefix(redis) })
  const source = await ctx.createSource()
  const buyers = await createAudience(ctx, source.id, { name: 'Buyers', condition: ORDERED_30_DAYS })
  await waitForIdle(ctx, buyers.id)

  // Identify first, the anonymous track in a later request.
  await ingest(ctx, source.writeKey, [identifyBy('user-1', { plan: 'pro' }, { anonymousId: 'anon-1' })])
  await ingestDrained(ctx)
  await ingest(ctx, source.writeKey, [trackBy('', 'Order Completed', Date.now(), { userId: undefined, anonymousId: 'anon-1' })])
  // Both in one batch: the identify comes first, so the track is the user's too.
  await ingest(ctx, source.writeKey, [
    identifyBy('user-2', {}, { anonymousId: 'anon-2' }),
    trackBy('', 'Order Completed', Date.now(), { userId: undefined, anonymousId: 'anon-2' })
  ])
  // An anonymous visitor never identified stays anonymous.
  await ingest(ctx, source.writeKey, [trackBy('', 'Order Completed', Date.now(), { userId: undefined, anonymousId: 'anon-3' })])
  await waitForAudience(ctx, buyers.id, (a) => a.size >= 3, 'three members')
  await ingestDrained(ctx)
  t.same(await allMembers(ctx, buyers.id), ['anon:anon-3', 'user-1', 'user-2'], 'linked tracks count for their users')
})

t.test('identify calls from a real Engage workspace set audience and computed-trait properties', async (t) => {
  const ctx = await buildTestApp(t, { redis: freshPrefix(redis) })
  const source = await ctx.createSource()
  const vip = await createAudience(ctx, source.id, { name: 'Engage VIPs', condition: { type: 'trait', trait: 'vip_customers', op: 'equals', value: true } })
  const valuable = await createAudience(ctx, source.id, { name: 'Valuable', condition: { type: 'trait', trait: 'lifetime_value', op: 'gte', value: 100 } })
  await waitForIdle(ctx, vip.id)
  await waitForIdle(ctx, valuable.id)

  // As Engage sends them (spec/segment.md): personas context, integrations and messageId.
  const engage = (userId: string, klass: 'audience' | 'trait', key: string, value: unknown, n: number) => identifyBy(userId, { [key]: value }, {
    messageId: `personas_2ZqHR1m9vSnUe${klass}${n}`,
    integrations: { All: false, 'Facebook Offline Conversions': true },
    context: { personas: { computation_class: klass, computation_id: `${klass === 'audience' ? 'aud' : 'tra'}_2ZqHQzLqCm4Mk`, computation_key: key, namespace: 'spa_w5ahFyrExYVG6xUwmSdMwK', space_id: 'spa_w5ahFyrExYVG6xUwmSdMwK' } }
  })
  await ingest(ctx, source.writeKey, [
    engage('user-1', 'audience', 'vip_customers', true, 1),
    engage('user-2', 'audience', 'vip_customers', false, 2),
    engage('user-1', 'trait', 'lifetime_value', 250, 3)
  ])
  await waitForAudience(ctx, vip.id, (a) => a.size === 1, 'the Engage audience member to join ours')
  await waitForAudience(ctx, valuable.id, (a) => a.size === 1, 'the computed trait to qualify the user')
  await ingestDrained(ctx)
  t.same(await allMembers(ctx, vip.id), ['user-1'])
  t.same(await allMembers(ctx, valuable.id), ['user-1'])
  const profile = await ctx.app.profiles.get(source.id, 'user-1')
  t.equal(profile.audiences.vip_customers, true, 'the Engage audience is a user property')
  t.equal(profile.traits.lifetime_value, 250, 'the computed trait is a trait')
  t.equal((await ctx.app.profiles.get(source.id, 'user-2')).audiences.vip_customers, false)

  await ingest(ctx, source.writeKey, [engage('user-1', 'audience', 'vip_customers', false, 4)])
  await waitForAudience(ctx, vip.id, (a) => a.size === 0, 'the user to leave with Engage\'s false')
  t.equal((await ctx.app.profiles.get(source.id, 'user-1')).audiences.vip_customers, false)
  await waitFor(async () => (await ctx.app.profiles.get(source.id, 'user-1')).audiences.engage_vips === false, 10_000, 'our audience\'s property to be false')
})
