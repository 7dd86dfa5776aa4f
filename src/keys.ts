/**
 * Redis key names, in one place. Data keys are `<prefix>:…`; keys that one Lua script touches
 * together share a `{hash tag}` so they land in one slot on Redis Cluster. BullMQ's keys use the
 * queue prefix `{<prefix>}`.
 */
export function redisKeys (prefix: string) {
  return {
    queuePrefix: `{${prefix}}`,
    sources: `${prefix}:sources`,
    writeKey: (writeKeyHash: string) => `${prefix}:writekey:${writeKeyHash}`,
    sourceStats: (sourceId: string) => `${prefix}:stats:{${sourceId}}`,
    dedup: (sourceId: string) => ({
      current: `${prefix}:dedup:{${sourceId}}:cur`,
      previous: `${prefix}:dedup:{${sourceId}}:prev`,
      startedAt: `${prefix}:dedup:{${sourceId}}:started`
    })
  }
}

export type RedisKeys = ReturnType<typeof redisKeys>
