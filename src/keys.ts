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
    destinations: `${prefix}:destinations`,
    sourceDestinations: (sourceId: string) => `${prefix}:source-destinations:${sourceId}`,
    accessToken: (destinationId: string) => `${prefix}:access-token:${destinationId}`,
    pausedUntil: (destinationId: string) => `${prefix}:paused:${destinationId}`,
    heldJobs: (destinationId: string) => `${prefix}:held:{${destinationId}}`,
    destinationStats: (destinationId: string) => `${prefix}:dstats:{${destinationId}}`,
    deadLetters: (destinationId: string) => `${prefix}:dead-letters:{${destinationId}}`,
    oauthState: (state: string) => `${prefix}:oauth-state:${state}`,
    dedup: (sourceId: string) => ({
      current: `${prefix}:dedup:{${sourceId}}:cur`,
      previous: `${prefix}:dedup:{${sourceId}}:prev`,
      startedAt: `${prefix}:dedup:{${sourceId}}:started`
    })
  }
}

export type RedisKeys = ReturnType<typeof redisKeys>
