import { execFile } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { findOnPath, freePort, startRedisServer, type LocalRedis } from '../../src/local-redis.js'
import type { TestRedis } from './redis.js'

const run = promisify(execFile)

export interface TestRedisCluster {
  /** `host:port,host:port,…`: REDIS_CLUSTER_NODES. */
  nodes: string
  ports: number[]
  /** Stops one primary (its AOF kept) and starts it again on the same port and folder. */
  stopNode: (index: number) => Promise<void>
  startNode: (index: number) => Promise<void>
  close: () => Promise<void>
}

/**
 * A Redis Cluster of `primaries` primaries (no replicas) on loopback, each a redis-server of the
 * test's own with AOF on, in a temp folder; made with `redis-cli --cluster create`. Undefined when
 * redis-server or redis-cli is not on PATH.
 */
export async function startTestRedisCluster (primaries = 3): Promise<TestRedisCluster | undefined> {
  const binary = findOnPath('redis-server')
  const cli = findOnPath('redis-cli')
  if (binary === undefined || cli === undefined) return undefined
  const root = mkdtempSync(join(tmpdir(), 'relay-cluster-'))
  const ports: number[] = []
  const servers: Array<LocalRedis | undefined> = []
  const dirOf = (i: number) => join(root, String(i))
  const extra = (i: number) => ['--cluster-enabled', 'yes', '--cluster-config-file', join(dirOf(i), 'nodes.conf'), '--cluster-node-timeout', '2000']
  for (let i = 0; i < primaries; i++) {
    mkdirSync(dirOf(i), { recursive: true })
    const port = await freePort()
    ports.push(port)
    servers.push(await startRedisServer({ binary, dir: dirOf(i), port, extraArgs: extra(i) }))
  }
  await run(cli, ['--cluster', 'create', ...ports.map((port) => `127.0.0.1:${port}`), '--cluster-replicas', '0', '--cluster-yes'])
  // Every node must agree that every slot is covered before clients use it.
  const deadline = Date.now() + 20_000
  for (const port of ports) {
    for (;;) {
      const { stdout } = await run(cli, ['-p', String(port), 'cluster', 'info'])
      if (stdout.includes('cluster_state:ok')) break
      if (Date.now() > deadline) throw new Error(`the cluster on ${port} did not become ok: ${stdout}`)
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
  }
  return {
    nodes: ports.map((port) => `127.0.0.1:${port}`).join(','),
    ports,
    stopNode: async (i) => { await servers[i]?.stop(); servers[i] = undefined },
    startNode: async (i) => { servers[i] = await startRedisServer({ binary, dir: dirOf(i), port: ports[i], extraArgs: extra(i) }) },
    close: async () => {
      for (const server of servers) await server?.stop()
      rmSync(root, { recursive: true, force: true })
    }
  }
}

/** The test's Redis as `buildTestApp` takes it, on a cluster the file started (and stops itself). */
export function clusterTestRedis (cluster: TestRedisCluster, prefix: string): TestRedis {
  const noop = async () => {}
  return { url: `redis://127.0.0.1:${cluster.ports[0]}`, clusterNodes: cluster.nodes, prefix, owned: false, stop: noop, start: noop, close: noop }
}
