import calculateSlot from 'cluster-key-slot'
import type { Cluster, ChainableCommander } from 'ioredis'
import { isCluster, primariesOf, type RedisClient } from './redis-client.js'

/** The Redis Cluster hash slot of a key (its `{tag}`'s, when it has one). */
export function slotOf (key: string): number {
  return calculateSlot(key)
}

type Reply = [error: Error | null, result: unknown]

/**
 * A pipeline whose commands may name keys of different hash slots. On one Redis it is one
 * ioredis pipeline, in the order queued (as before: the fastest). On a cluster, where ioredis
 * refuses a pipeline spanning primaries, each command goes to the pipeline of the primary serving
 * its key's slot, and those run side by side; replies come back in the order queued. Each command
 * itself must keep to one slot (`key`'s). Commands on one slot keep their order; commands on
 * different slots were never atomic together (a pipeline is not a transaction).
 */
export class SlotPipeline {
  private readonly single: ChainableCommander | undefined
  private readonly queued: Array<{ slot: number, command: (pipeline: ChainableCommander) => unknown }> = []
  private readonly early: Array<{ slot: number, command: (pipeline: ChainableCommander) => unknown }> = []
  private readonly afterEarly: Array<() => void> = []
  /** On one Redis: the places of `first`'s commands in the pipeline. */
  private readonly skipped = new Set<number>()

  constructor (private readonly redis: RedisClient) {
    if (!isCluster(redis)) this.single = redis.pipeline()
  }

  get length (): number {
    return this.single === undefined ? this.queued.length : this.single.length - this.skipped.size
  }

  /** Queues `command` (its keys all in `key`'s slot). */
  add (key: string, command: (pipeline: ChainableCommander) => unknown): this {
    if (this.single !== undefined) command(this.single)
    else this.queued.push({ slot: slotOf(key), command })
    return this
  }

  /**
   * Queues `command` to run before the commands `add` queues after it — on a cluster, before
   * every `add`ed command, in a round trip of its own, since commands on different primaries have
   * no order — and `done` once it has run. Its reply is not among exec's. For an index that must
   * name a key before the key is written (an index naming a key not written yet is harmless; the
   * opposite is not).
   */
  first (key: string, command: (pipeline: ChainableCommander) => unknown, done?: () => void): this {
    if (this.single !== undefined) {
      this.skipped.add(this.single.length)
      command(this.single)
    } else {
      this.early.push({ slot: slotOf(key), command })
    }
    if (done !== undefined) this.afterEarly.push(done)
    return this
  }

  /** Runs the commands; answers each one's [error, result], in the order `add` queued them. */
  async exec (): Promise<Reply[]> {
    if (this.single !== undefined) {
      if (this.single.length === 0) return []
      const replies = (await this.single.exec())! as Reply[]
      if (this.skipped.size === 0) return replies
      for (const i of this.skipped) if (replies[i][0] !== null) throw replies[i][0]
      for (const done of this.afterEarly) done()
      return replies.filter((_, i) => !this.skipped.has(i))
    }
    if (this.early.length > 0) {
      for (const [err] of await runByPrimary(this.redis as Cluster, this.early)) if (err !== null) throw err
      for (const done of this.afterEarly) done()
    }
    return runByPrimary(this.redis as Cluster, this.queued)
  }
}

/** Commands grouped into one pipeline per primary (by the client's slot map), run side by side. */
async function runByPrimary (redis: Cluster, commands: Array<{ slot: number, command: (pipeline: ChainableCommander) => unknown }>): Promise<Reply[]> {
  if (commands.length === 0) return []
  const groups = new Map<string, { pipeline: ChainableCommander, positions: number[] }>()
  commands.forEach(({ slot, command }, i) => {
    // Before the client knows the slot map (not yet connected): one pipeline per slot.
    const nodes = redis.slots[slot] as string[] | undefined
    const group = nodes === undefined || nodes.length === 0 ? `slot:${slot}` : nodes.join(',')
    let entry = groups.get(group)
    if (entry === undefined) groups.set(group, (entry = { pipeline: redis.pipeline(), positions: [] }))
    command(entry.pipeline)
    entry.positions.push(i)
  })
  const replies: Reply[] = new Array(commands.length)
  await Promise.all([...groups.values()].map(async ({ pipeline, positions }) => {
    const answers = (await pipeline.exec())!
    answers.forEach((answer, j) => { replies[positions[j]] = answer as Reply })
  }))
  return replies
}

/**
 * Items grouped so each group's keys share a slot, for a script or a multi-key command that must
 * keep to one: on one Redis a single group (as before); on a cluster one group per slot.
 */
export function groupBySlot<T> (redis: RedisClient, items: T[], keyOf: (item: T) => string): T[][] {
  if (!isCluster(redis)) return items.length === 0 ? [] : [items]
  const groups = new Map<number, T[]>()
  for (const item of items) {
    const slot = slotOf(keyOf(item))
    let group = groups.get(slot)
    if (group === undefined) groups.set(slot, (group = []))
    group.push(item)
  }
  return [...groups.values()]
}

/** MGET of keys in any slots: one MGET on one Redis, a GET each (pipelined per primary) on a cluster. */
export async function getMany (redis: RedisClient, keys: string[]): Promise<Array<string | null>> {
  if (keys.length === 0) return []
  if (!isCluster(redis)) return redis.mget(...keys)
  const pipeline = new SlotPipeline(redis)
  for (const key of keys) pipeline.add(key, (p) => p.get(key))
  return (await pipeline.exec()).map(([err, value]) => {
    if (err !== null) throw err
    return value as string | null
  })
}

/** The primaries in a stable order (by address): a resumable scan's cursor names one by its place. */
export function orderedPrimaries (redis: RedisClient) {
  const nodes = primariesOf(redis)
  return isCluster(redis) ? nodes.sort((a, b) => addressOf(a).localeCompare(addressOf(b))) : nodes
}

function addressOf (node: { options: { host?: string, port?: number } }): string {
  return `${node.options.host ?? ''}:${String(node.options.port ?? 0).padStart(5, '0')}`
}

let tags: string[] | undefined

/**
 * A short hash tag of each slot (`tagOfSlot(s)` hashes to slot s): a key `…{tag}` lands in the
 * same slot as a given key, so one script may touch both. Found once, on first use (~100k CRC16s).
 */
export function tagOfSlot (slot: number): string {
  if (tags === undefined) {
    const found: string[] = new Array(16384)
    let missing = 16384
    for (let i = 0; missing > 0; i++) {
      const tag = i.toString(36)
      const s = calculateSlot(tag)
      if (found[s] === undefined) { found[s] = tag; missing-- }
    }
    tags = found
  }
  return tags[slot]
}
