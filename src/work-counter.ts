/**
 * Work of one kind (requests, jobs, flushes): how many were started and how many finished.
 * The shutdown says from them what it drained.
 */
export class WorkCounter {
  started = 0
  finished = 0

  get inProgress (): number {
    return this.started - this.finished
  }

  /** `fn`, counted from each call's start to its end, whether it resolves or throws. */
  wrap<A extends unknown[], R> (fn: (...args: A) => Promise<R>): (...args: A) => Promise<R> {
    return async (...args: A) => {
      this.started++
      try {
        return await fn(...args)
      } finally {
        this.finished++
      }
    }
  }
}

/** What the service counts, named as the shutdown line says them. */
export const WORK_KINDS = ['requests', 'ingestFlushes', 'ingestJobs', 'deliverJobs', 'audienceSyncJobs'] as const
export type WorkKind = typeof WORK_KINDS[number]
export type WorkCounts = Record<WorkKind, WorkCounter>

export function workCounts (): WorkCounts {
  return Object.fromEntries(WORK_KINDS.map((kind) => [kind, new WorkCounter()])) as WorkCounts
}
