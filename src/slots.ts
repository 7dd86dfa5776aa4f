import calculateSlot from 'cluster-key-slot'
import type { ChainableCommander, Cluster } from 'ioredis'
import { isCluster, primariesOf, type RedisClient } from './redis-client.js'

/** A command to send, with the key whose hash slot decides where it goes. */
export type SlotCommand = [key: string, add: (pipeline: ChainableCommander) => unknown]

/** Each command's answer, as a pipeline's exec() gives it. */
export type SlotAnswers = Array<[Error | null, unknown]>

/** The hash slot of a key (Redis Cluster's, `{hash tag}` included). */
export function slotOf (key: string): number {
  return calculateSlot(key)
}

/** Keys grouped by hash slot, in their order within each group. */
export function groupBySlot<T> (items: T[], keyOf: (item: T) => string): T[][] {
  const groups = new Map<number, T[]>()
  for (const item of items) {
    const slot = slotOf(keyOf(item))
    let group = groups.get(slot)
    if (group === undefined) groups.set(slot, (group = []))
    group.push(item)
  }
  return [...groups.values()]
}

/**
 * Runs commands (each `add` adds exactly one to the pipeline it is given) without ever crossing
 * hash slots: one pipeline on one Redis (one round trip, as before); on a cluster, one pipeline per
 * hash slot, all at once (ioredis refuses a pipeline spanning nodes, Redis a MULTI or script
 * spanning slots). Not a transaction on either. Answers in the order given.
 */
export async function execBySlot (redis: RedisClient, commands: SlotCommand[]): Promise<SlotAnswers> {
  if (commands.length === 0) return []
  if (!isCluster(redis)) {
    const pipeline = redis.pipeline()
    for (const [, add] of commands) add(pipeline)
    return (await pipeline.exec()) as SlotAnswers
  }
  const answers: SlotAnswers = new Array(commands.length)
  const indexed = commands.map((command, i) => ({ command, i }))
  await Promise.all(groupBySlot(indexed, ({ command }) => command[0]).map(async (group) => {
    const pipeline = redis.pipeline()
    for (const { command } of group) command[1](pipeline)
    const results = (await pipeline.exec()) as SlotAnswers
    group.forEach(({ i }, n) => { answers[i] = results[n] })
  }))
  return answers
}

/** Throws the first command error among `answers` (a pipeline does not), else answers them. */
export function orThrow (answers: SlotAnswers): SlotAnswers {
  for (const [err] of answers) if (err !== null) throw err
  return answers
}

/**
 * Deletes keys: one DEL on one Redis; on a cluster one DEL per hash slot, all at once (a multi-key
 * DEL across slots is refused). Answers how many existed.
 */
export async function delBySlot (redis: RedisClient, keys: string[]): Promise<number> {
  const unique = [...new Set(keys)]
  if (unique.length === 0) return 0
  if (!isCluster(redis)) return await redis.del(...unique)
  const counts = await Promise.all(groupBySlot(unique, (key) => key).map((group) => redis.del(...group)))
  return counts.reduce((sum, n) => sum + n, 0)
}

/** MGET of keys in any slots: one on one Redis; per hash slot, all at once, on a cluster. */
export async function mgetBySlot (redis: RedisClient, keys: string[]): Promise<Array<string | null>> {
  if (keys.length === 0) return []
  if (!isCluster(redis)) return await redis.mget(...keys)
  const values: Array<string | null> = new Array(keys.length)
  const indexed = keys.map((key, i) => ({ key, i }))
  await Promise.all(groupBySlot(indexed, ({ key }) => key).map(async (group) => {
    const found = await redis.mget(...group.map(({ key }) => key))
    group.forEach(({ i }, n) => { values[i] = found[n] })
  }))
  return values
}

/**
 * Runs steps in order, each a set of commands (execBySlot): on one Redis all of them as one
 * pipeline, in order (one round trip, as before); on a cluster each step once the one before has
 * answered, its commands per hash slot at once. For writes that must not be seen half done out of
 * order — a record's index entry removed only after what hangs off it — so that a step cut short
 * leaves what a repeat finishes.
 */
export async function execInSteps (redis: RedisClient, steps: SlotCommand[][]): Promise<SlotAnswers> {
  if (!isCluster(redis)) return await execBySlot(redis, steps.flat())
  const answers: SlotAnswers = []
  for (const step of steps) answers.push(...await execBySlot(redis, step))
  return answers
}

/** DELs of `keys`, one per hash slot (as commands for execBySlot / execInSteps). */
export function delCommands (keys: string[]): SlotCommand[] {
  return groupBySlot([...new Set(keys)], (key) => key).map((group) => [group[0], (pipeline) => pipeline.del(...group)])
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

  /**
   * Runs the commands; answers each one's [error, result], in the order `add` queued them — or
   * throws the first command's error, as one command would (an ioredis pipeline does not: a
   * refused write, Redis out of memory or a key of the wrong type, would pass unnoticed and its
   * job end as if it had been written).
   */
  async exec (): Promise<Reply[]> {
    if (this.single !== undefined) {
      if (this.single.length === 0) return []
      const replies = orThrow((await this.single.exec())! as Reply[])
      if (this.skipped.size === 0) return replies
      for (const done of this.afterEarly) done()
      return replies.filter((_, i) => !this.skipped.has(i))
    }
    if (this.early.length > 0) {
      orThrow(await runByPrimary(this.redis as Cluster, this.early))
      for (const done of this.afterEarly) done()
    }
    return orThrow(await runByPrimary(this.redis as Cluster, this.queued))
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
export function slotGroups<T> (redis: RedisClient, items: T[], keyOf: (item: T) => string): T[][] {
  if (!isCluster(redis)) return items.length === 0 ? [] : [items]
  return groupBySlot(items, keyOf)
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
