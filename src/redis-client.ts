import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis'

/** A connection to the service's Redis: one server, or a Redis Cluster (REDIS_CLUSTER_NODES). */
export type RedisClient = Redis | Cluster

/** Where the service's Redis is: a URL, or a cluster's seed nodes with what every node needs. */
export type RedisTarget =
  | { kind: 'single', url: string }
  | { kind: 'cluster', nodes: Array<{ host: string, port: number }>, username?: string, password?: string, tls: boolean }

/**
 * REDIS_CLUSTER_NODES: `host:port,host:port,…`; an entry may also be a URL,
 * `redis[s]://[user:password@]host:port`, whose user name, password and TLS (rediss) then apply to
 * every node, as REDIS_URL's do to its server. Throws, naming the entry, on one it cannot read.
 */
export function parseClusterNodes (text: string): Extract<RedisTarget, { kind: 'cluster' }> {
  const target: Extract<RedisTarget, { kind: 'cluster' }> = { kind: 'cluster', nodes: [], tls: false }
  for (const entry of text.split(',').map((part) => part.trim()).filter((part) => part !== '')) {
    let url: URL
    try {
      url = new URL(/^rediss?:\/\//.test(entry) ? entry : `redis://${entry}`)
    } catch {
      throw new Error(`REDIS_CLUSTER_NODES: "${entryForMessage(entry)}" is not host:port`)
    }
    const port = Number(url.port === '' ? 6379 : url.port)
    if (url.hostname === '' || url.pathname.length > 1 || !Number.isInteger(port) || port < 1) throw new Error(`REDIS_CLUSTER_NODES: "${entryForMessage(entry)}" is not host:port`)
    target.nodes.push({ host: url.hostname.replace(/^\[|\]$/g, ''), port })
    if (url.protocol === 'rediss:') target.tls = true
    if (url.username !== '') target.username = decodeURIComponent(url.username)
    if (url.password !== '') target.password = decodeURIComponent(url.password)
  }
  if (target.nodes.length === 0) throw new Error('REDIS_CLUSTER_NODES names no node (host:port,host:port,…)')
  return target
}

/** An entry as an error may show it: without a password. */
function entryForMessage (entry: string): string {
  return entry.replace(/\/\/([^:@/]*):[^@/]*@/, '//$1:***@')
}

export function redisTarget (config: { REDIS_URL?: string, REDIS_CLUSTER_NODES?: string }): RedisTarget {
  if (config.REDIS_CLUSTER_NODES !== undefined) return parseClusterNodes(config.REDIS_CLUSTER_NODES)
  return { kind: 'single', url: config.REDIS_URL ?? 'redis://127.0.0.1:6379' }
}

/** What a connection is for: its options on one server; on a cluster, those of each node's connection. */
export interface ConnectionOptions extends RedisOptions {
  /** Cluster-level: false fails commands at once while a slot's node is unreachable. */
  enableOfflineQueue?: boolean
}

/**
 * A connection to `target`. On a cluster the same options go to every node's connection, and the
 * client keeps its slot map current (MOVED, ASK, a node away and back).
 */
export function connectRedis (target: RedisTarget, options: ConnectionOptions = {}): RedisClient {
  if (target.kind === 'single') return new Redis(target.url, options)
  const { enableOfflineQueue, retryStrategy, ...nodeOptions } = options
  const clusterOptions: ClusterOptions = {
    enableOfflineQueue,
    clusterRetryStrategy: retryStrategy ?? undefined,
    // Managed clusters (TLS) announce node addresses the certificate names: keep them as given.
    dnsLookup: (address, callback) => callback(null, address),
    slotsRefreshTimeout: 2000,
    redisOptions: {
      ...nodeOptions,
      username: target.username,
      password: target.password,
      ...(target.tls ? { tls: {} } : {})
    }
  }
  return new Cluster(target.nodes, clusterOptions)
}

export function isCluster (redis: RedisClient): redis is Cluster {
  return (redis as Cluster).isCluster === true
}

/**
 * The primaries to run a command on each of (SCAN, INFO): on a cluster every primary, on one
 * server the server itself.
 */
export function primariesOf (redis: RedisClient): Redis[] {
  return isCluster(redis) ? redis.nodes('master') : [redis]
}

/** Every key matching `pattern`, scanning every primary of a cluster. */
export async function * scanKeys (redis: RedisClient, pattern: string, count = 1000): AsyncGenerator<string[]> {
  for (const node of primariesOf(redis)) {
    let cursor = '0'
    do {
      const [next, keys] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', count)
      cursor = next
      if (keys.length > 0) yield keys
    } while (cursor !== '0')
  }
}

const OUT_OF_MEMORY = /\bOOM command not allowed\b/

/**
 * Whether Redis refused a command for want of memory (over `maxmemory` under noeviction): the
 * error itself, one a script passed on in its own, or one queued in a transaction Redis then
 * discarded (EXECABORT).
 */
export function isOutOfMemory (err: unknown): boolean {
  if (!(err instanceof Error)) return false
  const previous = (err as { previousErrors?: unknown[] }).previousErrors ?? []
  return OUT_OF_MEMORY.test(err.message) || previous.some((e) => e instanceof Error && OUT_OF_MEMORY.test(e.message))
}
