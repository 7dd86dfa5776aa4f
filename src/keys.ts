import calculateSlot from 'cluster-key-slot'

/** How the keys are laid out: on a cluster, each queue has a hash tag of its own. */
export interface KeyLayout {
  cluster: boolean
  /** INGEST_PARTITIONS. */
  ingestPartitions: number
}

/** BullMQ's queues other than ingest's partitions. */
export type QueueKind = 'deliver' | 'audience-sync' | 'regulations'

/**
 * Redis key names, in one place. Data keys are `<prefix>:…`; keys that one Lua script touches
 * together share a `{hash tag}` so they land in one slot on Redis Cluster. On one Redis, BullMQ's
 * keys use the queue prefix `{<prefix>}` (as every build has); on a cluster each queue has its own
 * tag — `{<prefix>:deliver}`, `{<prefix>:ingest-3}` — so the kinds of work land on different
 * primaries.
 */
export function redisKeys (prefix: string, layout: KeyLayout = { cluster: false, ingestPartitions: 1 }) {
  const queuePrefix = `{${prefix}}`
  return {
    queuePrefix,
    /** The BullMQ prefix of a queue of `kind`. */
    queuePrefixOf: (kind: QueueKind) => layout.cluster ? `{${prefix}:${kind}}` : queuePrefix,
    /** Ingest's partitions (INGEST_PARTITIONS), in order: what a flush to each writes. */
    ingestPartitions: Array.from({ length: layout.ingestPartitions }, (_, p) => ingestPartition(prefix, queuePrefix, p, layout)),
    sources: `${prefix}:sources`,
    writeKey: (writeKeyHash: string) => `${prefix}:writekey:${writeKeyHash}`,
    sourceStats: (sourceId: string) => `${prefix}:stats:{${sourceId}}`,
    // A source's rate-limit bucket, shared by every API process.
    rateLimit: (sourceId: string) => `${prefix}:rate:{${sourceId}}`,
    destinations: `${prefix}:destinations`,
    sourceDestinations: (sourceId: string) => `${prefix}:source-destinations:${sourceId}`,
    accessToken: (destinationId: string) => `${prefix}:access-token:${destinationId}`,
    pausedUntil: (destinationId: string) => `${prefix}:paused:${destinationId}`,
    // Deliver jobs held by builds before held-conversions (a set of job ids): still released.
    heldJobs: (destinationId: string) => `${prefix}:held:{${destinationId}}`,
    // Deliver jobs held back (no token, an expired Graph version): job id → its conversions.
    heldConversions: (destinationId: string) => `${prefix}:held-conversions:{${destinationId}}`,
    destinationStats: (destinationId: string) => `${prefix}:dstats:{${destinationId}}`,
    // Which jobs' counts a destination has taken (member: the job's part, score: when), in its
    // slot: a job run again after a crash counts nothing twice.
    destinationCounted: (destinationId: string) => `${prefix}:counted:{${destinationId}}`,
    sourceCounted: (sourceId: string) => `${prefix}:counted-source:{${sourceId}}`,
    deadLetters: (destinationId: string) => `${prefix}:dead-letters:{${destinationId}}`,
    oauthState: (state: string) => `${prefix}:oauth-state:${state}`,
    // Jobs completed per queue (a field each), counted by the workers: BullMQ removes completed jobs.
    queueProcessed: `${prefix}:queue-processed`,
    // Profiles (with their event history) spread by user: one hash slot per user, not per source.
    profile: (sourceId: string, profileId: string) => `${prefix}:profile:${sourceId}:{${profileId}}`,
    profilePattern: (sourceId: string) => `${prefix}:profile:${sourceId}:*`,
    // A source's profiles counted by the day they expire (and `kept`: audience members).
    profileCounts: (sourceId: string) => `${prefix}:profile-counts:{${sourceId}}`,
    anonymousLink: (sourceId: string, anonymousId: string) => `${prefix}:anon:${sourceId}:{${anonymousId}}`,
    // A former user id joined to another by an alias (previousId → userId).
    userLink: (sourceId: string, userId: string) => `${prefix}:user-link:${sourceId}:{${userId}}`,
    eventCodes: (sourceId: string) => `${prefix}:event-codes:${sourceId}`,
    audiences: `${prefix}:audiences`,
    sourceAudiences: (sourceId: string) => `${prefix}:source-audiences:${sourceId}`,
    audienceKeys: (sourceId: string) => `${prefix}:audience-keys:${sourceId}`,
    audienceState: (audienceId: string) => `${prefix}:audience-state:{${audienceId}}`,
    audienceMembers: (audienceId: string) => `${prefix}:audience-members:{${audienceId}}`,
    audienceLapses: (audienceId: string) => `${prefix}:audience-lapses:{${audienceId}}`,
    audienceChanges: (audienceId: string) => `${prefix}:audience-changes:{${audienceId}}`,
    // The bodies of one ingest job, a hash (field: the request's place in the job), and the
    // answer of its duplicate check share the job's tag: read and deleted together.
    ingestBodies: (jobTag: string) => `${prefix}:ingest-body:{${jobTag}}`,
    // The duplicate check's answer for the job's client-given ids ('0' new, '1' seen).
    ingestDedupAnswer: (jobTag: string) => `${prefix}:ingest-body:{${jobTag}}:dedup`,
    // A source's suppressed subjects (regulations): fingerprints of user and anonymous ids, in the
    // source's slot, where the flush's duplicate check reads them.
    suppressed: (sourceId: string) => `${prefix}:suppressed:{${sourceId}}`,
    regulations: `${prefix}:regulations`,
    sourceRegulations: (sourceId: string) => `${prefix}:source-regulations:${sourceId}`,
    dedup: (sourceId: string) => ({
      current: `${prefix}:dedup:{${sourceId}}:cur`,
      previous: `${prefix}:dedup:{${sourceId}}:prev`,
      startedAt: `${prefix}:dedup:{${sourceId}}:started`
    })
  }
}

export type RedisKeys = ReturnType<typeof redisKeys>

/**
 * One ingest partition's keys: its queue's, its jobs' bodies, its duplicate windows, its copies of
 * the sources' suppression sets and its part of the sources' ingest counts — one hash tag for all,
 * so a flush's script touches one slot. One partition on one Redis keeps the layout of the builds
 * before partitions (queue `ingest`, a window per source in the source's tag): an upgrade finds
 * its queued jobs and its windows where they were.
 */
function ingestPartition (prefix: string, queuePrefix: string, p: number, layout: KeyLayout) {
  if (!layout.cluster && layout.ingestPartitions === 1) {
    return {
      index: 0,
      name: 'ingest',
      queuePrefix,
      bodies: (jobTag: string) => `${prefix}:ingest-body:{${jobTag}}`,
      dedupAnswer: (jobTag: string) => `${prefix}:ingest-body:{${jobTag}}:dedup`,
      dedup: (sourceId: string) => ({ current: `${prefix}:dedup:{${sourceId}}:cur`, previous: `${prefix}:dedup:{${sourceId}}:prev`, startedAt: `${prefix}:dedup:{${sourceId}}:started` }),
      suppressed: (sourceId: string) => `${prefix}:suppressed:{${sourceId}}`,
      sourceStats: (sourceId: string) => `${prefix}:stats:{${sourceId}}`
    }
  }
  const name = `ingest-${p}`
  const tag = spreadTag(`${prefix}:${name}`, p, layout.ingestPartitions)
  return {
    index: p,
    name,
    queuePrefix: tag,
    bodies: (jobTag: string) => `${prefix}:ingest-body:${tag}:${jobTag}`,
    dedupAnswer: (jobTag: string) => `${prefix}:ingest-body:${tag}:${jobTag}:dedup`,
    dedup: (sourceId: string) => ({ current: `${prefix}:dedup:${tag}:${sourceId}:cur`, previous: `${prefix}:dedup:${tag}:${sourceId}:prev`, startedAt: `${prefix}:dedup:${tag}:${sourceId}:started` }),
    // A copy of the source's suppression set (RedisKeys.suppressed), where this partition's
    // flushes read it.
    suppressed: (sourceId: string) => `${prefix}:suppressed:${tag}:${sourceId}`,
    // The ingest counts (accepted, duplicate, rejected, suppressed) this partition's flushes
    // added: the source's stats are their sum with the source's own hash.
    sourceStats: (sourceId: string) => `${prefix}:ingest-stats:${tag}:${sourceId}`
  }
}

/**
 * `{<base>:<n>}`, n the first whose hash slot is in the `p`-th of `of` equal ranges of the 16,384
 * slots. A cluster gives each primary a contiguous run of slots (evenly, as `redis-cli --cluster
 * create` and managed services do): partitions whose slots are spread evenly land on the
 * primaries evenly, where plain names fall where their hashes do (16 over 3 primaries put 8 on one).
 */
export function spreadTag (base: string, p: number, of: number): string {
  const low = Math.floor(p * SLOTS / of)
  const high = Math.floor((p + 1) * SLOTS / of)
  for (let n = 0; ; n++) {
    const slot = calculateSlot(`${base}:${n}`)
    if (slot >= low && slot < high) return `{${base}:${n}}`
  }
}

const SLOTS = 16384

export type IngestPartitionKeys = ReturnType<typeof ingestPartition>
