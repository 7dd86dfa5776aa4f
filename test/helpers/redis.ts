import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomUUID } from 'node:crypto'
import { findOnPath, startRedisServer, type LocalRedis } from '../../src/local-redis.js'
import { connectRedis, redisTarget, scanKeys, type ConnectionOptions, type RedisClient } from '../../src/redis-client.js'
import { startTestRedisCluster } from './redis-cluster.js'

/** Every key matching `pattern` (KEYS, on every primary of a cluster). */
export async function allKeys (redis: RedisClient, pattern: string): Promise<string[]> {
  const keys: string[] = []
  for await (const found of scanKeys(redis, pattern)) keys.push(...found)
  return keys
}

/** A client of the test's Redis, one server or a cluster. */
export function connectTestRedis (redis: TestRedis, options: ConnectionOptions = {}): RedisClient {
  return connectRedis(redisTarget({ REDIS_URL: redis.url, REDIS_CLUSTER_NODES: redis.clusterNodes }), options)
}

export interface TestRedis {
  /** A node's URL (on a cluster, the first seed node's: connect with `connectTestRedis`). */
  url: string
  /** On a cluster (TEST_REDIS=cluster): REDIS_CLUSTER_NODES. */
  clusterNodes?: string
  /** A key prefix of the test's own (matters only on a shared server). */
  prefix: string
  /** Stops the server (when the test owns one): simulates Redis going away. */
  stop: () => Promise<void>
  /** Starts it again on the same port and data folder: what was written comes back from the AOF. */
  start: () => Promise<void>
  owned: boolean
  close: () => Promise<void>
}

/**
 * A redis-server of the test's own on a free port in a temp folder (AOF on, like production),
 * so tests are isolated and may stop and restart it. Without redis-server on PATH, falls back to
 * REDIS_URL with a unique prefix (tests that stop Redis are then skipped).
 */
export async function startTestRedis (): Promise<TestRedis> {
  const prefix = `test-${randomUUID().slice(0, 8)}`
  if (process.env.TEST_REDIS === 'cluster') {
    const cluster = await startTestRedisCluster()
    if (cluster === undefined) throw new Error('TEST_REDIS=cluster needs redis-server and redis-cli on PATH')
    const all = cluster.ports.map((_, i) => i)
    return {
      url: `redis://127.0.0.1:${cluster.ports[0]}`,
      clusterNodes: cluster.nodes,
      prefix,
      owned: true,
      stop: async () => { for (const i of all) await cluster.stopNode(i) },
      start: async () => { for (const i of all) await cluster.startNode(i) },
      close: () => cluster.close()
    }
  }
  const binary = findOnPath('redis-server')
  if (binary === undefined) {
    const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
    const noop = async () => {}
    return { url, prefix, stop: noop, start: noop, owned: false, close: noop }
  }
  const dir = mkdtempSync(join(tmpdir(), 'relay-redis-'))
  let server: LocalRedis | undefined = await startRedisServer({ binary, dir })
  const port = Number(new URL(server.url).port)
  return {
    url: server.url,
    prefix,
    owned: true,
    stop: async () => { await server?.stop(); server = undefined },
    start: async () => { server = await startRedisServer({ binary, dir, port }) },
    close: async () => {
      await server?.stop()
      rmSync(dir, { recursive: true, force: true })
    }
  }
}
