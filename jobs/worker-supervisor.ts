import type { Queue, Worker } from 'bullmq'
import type { FastifyBaseLogger } from 'fastify'
import type { RedisClient } from '../src/redis-client.js'

/** A queue's worker, started anew when it stops taking jobs, and closed within a bound. */
export interface SupervisedWorker<T> {
  /** The worker now consuming (a new one after a restart). */
  readonly worker: Worker<T>
  /** Starts consuming and watching. */
  start: () => void
  /**
   * Closes the worker: it finishes the jobs in hand, for at most `timeoutMs`; past that it is
   * disconnected and left (its jobs go back to the queue once their locks expire).
   */
  close: (timeoutMs: number) => Promise<void>
}

/**
 * Runs the worker `create` makes for `queue`, and starts a new one when the queue has jobs and
 * none is taken. BullMQ's blocking connection to a Redis Cluster can stay stuck after a primary
 * restarts (seen in test/cluster/primary-restart.test.ts under load): the worker waits forever,
 * its queue's jobs wait with it, and closing it waits forever too. Checked every `intervalMs`:
 * the same job at the head of the wait list at two checks running, or a delayed job overdue by
 * more than `intervalMs`, with no job of the queue active (read on `redis`, the queue's Redis) — a worker with room for a job takes a
 * waiting one within milliseconds — means nobody consumes the queue. A paused queue is left
 * alone; so is a worker whose run loop ended because it was closed.
 */
export function superviseWorker<T> (queue: Queue<T>, create: () => Worker<T>, options: { redis: RedisClient, intervalMs: number, log: FastifyBaseLogger }): SupervisedWorker<T> {
  let worker = create()
  let timer: NodeJS.Timeout | undefined
  let lastHead: string | undefined
  let closing = false
  const run = (current: Worker<T>) => {
    current.run().catch((err) => { if (!closing) options.log.error({ err, queue: queue.name }, 'worker stopped') })
  }

  async function stuck (): Promise<boolean> {
    const client = options.redis
    const [paused, active, [head], [, dueScore]] = await Promise.all([
      queue.isPaused(),
      queue.getActiveCount(),
      client.lrange(queue.keys.wait, -1, -1),
      client.zrange(queue.keys.delayed, 0, 0, 'WITHSCORES')
    ])
    const sameHead = head !== undefined && head === lastHead
    lastHead = head
    if (paused || active > 0) return false
    // A delayed job's score is its due time × 4096 (BullMQ keeps an order counter in the rest).
    const overdue = dueScore !== undefined && Math.floor(Number(dueScore) / 4096) < Date.now() - options.intervalMs
    return sameHead || overdue
  }

  async function check (): Promise<void> {
    if (closing || !(await stuck()) || closing) return
    options.log.warn({ queue: queue.name, waitingJob: lastHead }, 'the queue has jobs and its worker takes none: a new worker takes over')
    const old = worker
    worker = create()
    lastHead = undefined
    run(worker)
    // Forced: not waiting for the stuck wait to end (it may never); it has no job in hand.
    old.close(true).catch(() => {})
  }

  return {
    get worker () { return worker },
    start () {
      run(worker)
      const tick = () => {
        timer = setTimeout(() => { check().catch(() => {}).finally(() => { if (!closing) tick() }) }, options.intervalMs)
        timer.unref()
      }
      tick()
    },
    async close (timeoutMs) {
      closing = true
      clearTimeout(timer)
      let bound: NodeJS.Timeout | undefined
      const closed = await Promise.race([
        worker.close().then(() => true),
        new Promise<false>((resolve) => { bound = setTimeout(() => resolve(false), timeoutMs) })
      ]).finally(() => clearTimeout(bound))
      if (closed) return
      options.log.warn({ queue: queue.name, ms: timeoutMs }, 'the worker did not close in time: its blocking connection is dropped')
      dropBlockingConnection(worker)
    }
  }
}

/**
 * Closes, without waiting, what a worker stuck in its close still holds: its own (blocking)
 * connection, forced — so BullMQ's cluster recovery stops reconnecting it — and its lock renewal
 * timer. BullMQ has no public call for it (`worker.disconnect()` drops the connection the
 * workers share as well), and its `close()` reaches these only after the wait that is stuck.
 */
function dropBlockingConnection (worker: Worker): void {
  const inner = worker as unknown as { backend?: { close?: (force: boolean) => Promise<void> }, lockManager?: { close?: () => Promise<void> } }
  inner.backend?.close?.(true).catch(() => {})
  inner.lockManager?.close?.().catch(() => {})
}
