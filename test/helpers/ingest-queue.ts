import { randomUUID } from 'node:crypto'
import { Queue } from 'bullmq'
import { Redis } from 'ioredis'
import { readJobMessages } from '../../jobs/ingest.js'
import type { IngestJobData } from '../../jobs/queues.js'
import type { SegmentMessage } from '../../src/segment/types.js'
import type { TestRedis } from './redis.js'

interface Teardown { teardown: (fn: () => unknown) => void }

/** The same redis-server under a fresh key prefix: several apps in one test file stay apart. */
export function freshPrefix (redis: TestRedis): TestRedis {
  return { ...redis, prefix: `test-${randomUUID().slice(0, 8)}` }
}

/**
 * Reads what the API stored: the messages of the waiting ingest jobs (run the app with
 * ROLE api so that no worker takes them), as the worker would get them.
 */
export function ingestQueue (t: Teardown, redis: TestRedis) {
  const queue = new Queue<IngestJobData>('ingest', { connection: { url: redis.url }, prefix: `{${redis.prefix}}` })
  t.teardown(() => queue.close())
  const client = new Redis(redis.url)
  t.teardown(() => client.disconnect())
  const stored = async (sourceId?: string): Promise<SegmentMessage[]> => {
    const jobs = await queue.getWaiting(0, -1)
    // In the order they were stored (job ids are increasing numbers), as the worker takes them.
    jobs.sort((a, b) => Number(a.id) - Number(b.id))
    const messages = await Promise.all(jobs.map(async (job) => (await readJobMessages(client, job.data)).messages))
    return messages.flat()
      .filter(([source]) => sourceId === undefined || source === sourceId)
      .map(([, message]) => message)
  }
  return { queue, stored }
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
