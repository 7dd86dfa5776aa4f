import { randomUUID } from 'node:crypto'
import { Queue } from 'bullmq'
import { readJobMessages } from '../../jobs/ingest.js'
import type { IngestJobData } from '../../jobs/queues.js'
import type { SegmentMessage } from '../../src/segment/types.js'
import { redisKeys } from '../../src/keys.js'
import { connectTestRedis, type TestRedis } from './redis.js'

interface Teardown { teardown: (fn: () => unknown) => void }

/** The same redis-server under a fresh key prefix: several apps in one test file stay apart. */
export function freshPrefix (redis: TestRedis): TestRedis {
  return { ...redis, prefix: `test-${randomUUID().slice(0, 8)}` }
}

/**
 * Reads what the API stored: the messages of the waiting ingest jobs (run the app with
 * ROLE api so that no worker takes them), as the worker would get them — from every ingest
 * partition (`partitions`: the app's INGEST_PARTITIONS; on a cluster 16 unless given). `queue` is
 * the first partition's.
 */
export function ingestQueue (t: Teardown, redis: TestRedis, partitions?: number) {
  const cluster = redis.clusterNodes !== undefined
  const keys = redisKeys(redis.prefix, { cluster, ingestPartitions: partitions ?? (cluster ? 16 : 1) })
  const client = connectTestRedis(redis)
  t.teardown(() => client.disconnect())
  const queues = keys.ingestPartitions.map((partition) => new Queue<IngestJobData>(partition.name, { connection: client as never, prefix: partition.queuePrefix }))
  t.teardown(() => Promise.all(queues.map((queue) => queue.close())))
  const stored = async (sourceId?: string): Promise<SegmentMessage[]> => {
    const jobs = (await Promise.all(queues.map((queue) => queue.getWaiting(0, -1)))).flat()
    // In the order they were stored (job ids are increasing numbers in each queue), as the worker takes them.
    jobs.sort((a, b) => a.timestamp - b.timestamp || Number(a.id) - Number(b.id))
    const messages = await Promise.all(jobs.map(async (job) => (await readJobMessages(client, job.data)).messages))
    return messages.flat()
      .filter(([source]) => sourceId === undefined || source === sourceId)
      .map(([, message]) => message)
  }
  return { queue: queues[0], queues, stored }
}

/** Polls `check` until it returns true (or gives up after `timeoutMs`, returning false). */
export async function eventually (check: () => Promise<boolean> | boolean, timeoutMs = 10_000, everyMs = 50): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (await check()) return true
    if (Date.now() > deadline) return false
    await new Promise((resolve) => setTimeout(resolve, everyMs))
  }
}
