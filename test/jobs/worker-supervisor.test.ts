// A supervised worker (jobs/worker-supervisor.ts) on a real Redis and BullMQ: a worker that stops
// taking jobs while its queue has some is replaced, and the jobs run; a worker whose job never
// ends closes within its bound instead of holding the shutdown forever.
import { randomUUID } from 'node:crypto'
import { Queue, Worker } from 'bullmq'
import pino from 'pino'
import t from 'tap'
import { connectRedis, redisTarget } from '../../src/redis-client.js'
import { superviseWorker } from '../../jobs/worker-supervisor.js'
import { waitFor } from '../helpers/delivery-setup.js'
import { startTestRedis } from '../helpers/redis.js'

const redis = await startTestRedis()
t.teardown(() => redis.close())

/** A queue, the shared connections, and a log that keeps what it was told. */
function setup (t: { teardown: (fn: () => unknown) => void }) {
  const client = connectRedis(redisTarget({ REDIS_URL: redis.url, REDIS_CLUSTER_NODES: redis.clusterNodes }))
  const workerConnection = connectRedis(redisTarget({ REDIS_URL: redis.url, REDIS_CLUSTER_NODES: redis.clusterNodes }), { maxRetriesPerRequest: null })
  const name = `supervised-${randomUUID().slice(0, 8)}`
  const prefix = `{${redis.prefix}-${name}}`
  const queue = new Queue(name, { connection: client, prefix })
  const said: string[] = []
  const log = pino({ level: 'warn' }, { write: (line: string) => { said.push(JSON.parse(line).msg) } })
  t.teardown(async () => {
    await queue.close()
    await client.quit()
    await workerConnection.quit()
  })
  return { client, workerConnection, name, prefix, queue, said, log }
}

t.test('a worker that stops taking jobs is replaced: the queue\'s jobs run', async (t) => {
  const { client, workerConnection, name, prefix, queue, said, log } = setup(t)
  const done: string[] = []
  let made = 0
  const supervised = superviseWorker(queue, () => {
    made++
    return new Worker(name, async (job) => { done.push(String(job.data.id)) }, { connection: workerConnection, prefix, autorun: false })
  }, { redis: client, intervalMs: 300, log })
  t.teardown(() => supervised.close(2000))
  supervised.start()
  await queue.add('job', { id: 'before' })
  await waitFor(() => done.includes('before'), 10_000, 'the first job')

  // The worker's loop ends without the service closing it (as a loop that threw, or whose
  // blocking connection never answers again): nobody takes the queue's jobs any more.
  const first = supervised.worker
  await first.close()
  await queue.add('job', { id: 'after' })
  await waitFor(() => done.includes('after'), 10_000, () => `the job added after the worker stopped (told: ${said.join('; ')})`)
  t.equal(made, 2, 'one new worker')
  t.not(supervised.worker, first, 'it is the worker now')
  t.match(said, [/takes none: a new worker takes over/], 'the log says why')
  t.same(done, ['before', 'after'], 'each job once')
})

t.test('a busy or idle worker is left alone', async (t) => {
  const { client, workerConnection, name, prefix, queue, said, log } = setup(t)
  let release: () => void = () => {}
  const held = new Promise<void>((resolve) => { release = resolve })
  let made = 0
  const supervised = superviseWorker(queue, () => {
    made++
    return new Worker(name, async () => { await held }, { connection: workerConnection, prefix, autorun: false, concurrency: 1 })
  }, { redis: client, intervalMs: 200, log })
  t.teardown(() => supervised.close(2000))
  supervised.start()
  // One job in hand for a while, others waiting behind it: a full worker, not a stuck one.
  await queue.addBulk([{ name: 'job', data: {} }, { name: 'job', data: {} }, { name: 'job', data: {} }])
  await new Promise((resolve) => setTimeout(resolve, 1500))
  t.equal(made, 1, 'no new worker while one job is active')
  release()
  await waitFor(async () => (await queue.getJobCounts('waiting', 'active')).waiting === 0, 10_000, 'the queue to drain')
  await new Promise((resolve) => setTimeout(resolve, 800))
  t.equal(made, 1, 'nor while the queue is empty')
  t.same(said, [])
})

t.test('closing waits for the jobs in hand, at most its bound', async (t) => {
  const { client, workerConnection, name, prefix, queue, log, said } = setup(t)
  let started = false
  let release: () => void = () => {}
  const held = new Promise<void>((resolve) => { release = resolve })
  const supervised = superviseWorker(queue, () => new Worker(name, async () => {
    started = true
    await held // until the test lets it go, long after the bound
  }, { connection: workerConnection, prefix, autorun: false, lockDuration: 1000 }), { redis: client, intervalMs: 60_000, log })
  supervised.start()
  await queue.add('job', {})
  await waitFor(() => started, 10_000, 'the job to start')
  const before = Date.now()
  await supervised.close(700)
  const took = Date.now() - before
  t.ok(took >= 650 && took < 5000, `closed after its bound, not never (${took} ms)`)
  t.match(said, [/did not close in time/])
  // (The job ends after all, and the worker with it, before the test's connections close.)
  release()
  await supervised.worker.close()
})
