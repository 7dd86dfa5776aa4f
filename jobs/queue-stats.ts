import type { Queue, Worker } from 'bullmq'
import type { RedisClient } from '../src/redis-client.js'

/** One queue's state, as GET /v1/queues and /metrics report it. */
export interface QueueStats {
  name: string
  /** Ready to run, waiting for a worker (prioritized jobs included). */
  waiting: number
  active: number
  /** Waiting for a time: a retry's backoff, a destination's pause, a hold. */
  delayed: number
  /** Failed for good and kept (see each queue's retention). */
  failed: number
  /**
   * How long the oldest waiting job has existed (since it was added: a job that was delayed first
   * — a retry's backoff — counts that time too); null when none waits.
   */
  oldestWaitingAgeMs: number | null
  /** Jobs completed since the deployment began (a counter in Redis: BullMQ removes completed jobs). */
  processedTotal: number
  /** With more than one ingest partition: each partition's own figures (the entry is their sum). */
  partitions?: QueueStats[]
}

/**
 * Counts every job the worker completes, in Redis (`key`, a field per queue): completed jobs are
 * removed at once (`removeOnComplete`), so BullMQ keeps no count of them. One command per job;
 * a count that cannot be written (Redis away) is lost, never a job.
 */
export function countProcessed (worker: Worker, redis: RedisClient, key: string): void {
  worker.on('completed', () => { redis.hincrby(key, worker.name, 1).catch(() => {}) })
}

/** One queue's figures, read from Redis (`redis`: a connection to the queue's Redis). */
export async function readQueueStats (queue: Queue, redis: RedisClient, processedKey: string, now = Date.now()): Promise<QueueStats> {
  const [counts, [oldestId], processed] = await Promise.all([
    queue.getJobCounts('waiting', 'prioritized', 'active', 'delayed', 'failed'),
    // BullMQ adds to the left of the wait list and takes from the right: the oldest is the last.
    redis.lrange(queue.keys.wait, -1, -1),
    redis.hget(processedKey, queue.name)
  ])
  let oldestWaitingAgeMs: number | null = null
  if (oldestId !== undefined) {
    const timestamp = Number(await redis.hget(queue.toKey(oldestId), 'timestamp'))
    // (Taken by a worker in between: its hash may be gone. Then none is reported rather than a guess.)
    if (Number.isFinite(timestamp) && timestamp > 0) oldestWaitingAgeMs = Math.max(0, Math.round(now - timestamp))
  }
  return {
    name: queue.name,
    waiting: (counts.waiting ?? 0) + (counts.prioritized ?? 0),
    active: counts.active ?? 0,
    delayed: counts.delayed ?? 0,
    failed: counts.failed ?? 0,
    oldestWaitingAgeMs,
    processedTotal: Number(processed ?? 0)
  }
}

/**
 * The partitions of one logical queue (ingest) as one entry: counts and processed jobs summed, the
 * oldest wait the oldest of any; `partitions` lists each when there is more than one.
 */
export function combinePartitions (name: string, parts: QueueStats[]): QueueStats {
  if (parts.length === 1) return { ...parts[0], name }
  const ages = parts.map((part) => part.oldestWaitingAgeMs).filter((age): age is number => age !== null)
  return {
    name,
    waiting: sum(parts, 'waiting'),
    active: sum(parts, 'active'),
    delayed: sum(parts, 'delayed'),
    failed: sum(parts, 'failed'),
    oldestWaitingAgeMs: ages.length === 0 ? null : Math.max(...ages),
    processedTotal: sum(parts, 'processedTotal'),
    partitions: parts
  }
}

function sum (parts: QueueStats[], field: 'waiting' | 'active' | 'delayed' | 'failed' | 'processedTotal'): number {
  return parts.reduce((total, part) => total + part[field], 0)
}
