// SlotPipeline, on one Redis and on a 3-primary cluster: a command Redis refuses (here a key of the
// wrong type; in production Redis out of memory) is thrown, not passed over — an ingest stage's
// writes that did not happen must fail the job, which then runs again, instead of ending it as done.
import t from 'tap'
import { connectRedis, redisTarget, type RedisClient } from '../src/redis-client.js'
import { SlotPipeline } from '../src/slots.js'
import { startTestRedisCluster } from './helpers/redis-cluster.js'
import { startTestRedis } from './helpers/redis.js'

const single = await startTestRedis()
t.teardown(() => single.close())
const cluster = await startTestRedisCluster()
if (cluster !== undefined) t.teardown(() => cluster.close())

const targets: Array<[string, () => RedisClient]> = [
  ['one Redis', () => connectRedis(redisTarget({ REDIS_URL: single.url, REDIS_CLUSTER_NODES: single.clusterNodes }))],
  ...(cluster === undefined ? [] : [['a cluster', () => connectRedis(redisTarget({ REDIS_CLUSTER_NODES: cluster.nodes }))] as [string, () => RedisClient]])
]

for (const [name, connect] of targets) {
  t.test(`${name}: a refused command is thrown; the others ran, in order, and answer when none is refused`, async (t) => {
    const redis = connect()
    t.teardown(() => redis.quit())
    const keys = Array.from({ length: 30 }, (_, i) => `slots-test:${name}:counter-${i}`)
    const wrong = `slots-test:${name}:a-list`
    await redis.rpush(wrong, 'x')

    const refused = new SlotPipeline(redis)
    for (const key of keys) refused.add(key, (p) => p.incr(key))
    refused.add(wrong, (p) => p.incr(wrong))
    await t.rejects(refused.exec(), /WRONGTYPE/, 'the refused INCR is thrown')
    for (const key of keys) t.equal(await redis.get(key), '1', `${key}: written (a pipeline is not a transaction)`)

    const first = new SlotPipeline(redis)
    first.first(wrong, (p) => p.incr(wrong))
    first.add(`${wrong}-after`, (p) => p.incr(`${wrong}-after`))
    await t.rejects(first.exec(), /WRONGTYPE/, 'a refused `first` command is thrown too')

    const fine = new SlotPipeline(redis)
    for (const key of keys) fine.add(key, (p) => p.incr(key))
    const answers = await fine.exec()
    t.same(answers, keys.map(() => [null, 2]), 'every answer, in the order queued')
  })
}
