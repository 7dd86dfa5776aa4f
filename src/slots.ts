import calculateSlot from 'cluster-key-slot'
import type { ChainableCommander } from 'ioredis'
import { isCluster, type RedisClient } from './redis-client.js'

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
