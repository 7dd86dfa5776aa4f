import { execFileSync, spawn } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { freePort } from '../src/local-redis.js'
import { eventually } from './helpers/ingest-queue.js'
import { startTestRedis } from './helpers/redis.js'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const ADMIN_TOKEN = 'server-test-admin-token-0123'

/**
 * The pids of a process's Node.js children: the cluster's service processes (not tsx's esbuild).
 * Known by their executable, this test's own (cluster forks process.execPath), not by their
 * process name: Node 24's official builds name their main thread "MainThread", not "node".
 */
function childrenOf (pid: number): number[] {
  try {
    return execFileSync('ps', ['-o', 'pid=,args=', '--ppid', String(pid)]).toString().trim().split('\n')
      .map((line) => line.trim().split(' '))
      .filter(([, executable]) => executable === process.execPath)
      .map(([child]) => Number(child))
  } catch {
    return [] // ps exits 1 when there are none
  }
}

t.test('PROCESSES=2: two service processes share the port, a dead one is replaced, SIGTERM stops all', async (t) => {
  const redis = await startTestRedis()
  t.teardown(() => redis.close())
  const port = await freePort()
  const url = `http://127.0.0.1:${port}`
  const primary = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '',
      PROCESSES: '2',
      PORT: String(port),
      REDIS_URL: redis.url,
      REDIS_PREFIX: redis.prefix,
      ADMIN_TOKEN,
      SECRET_KEY: 'server-test-secret-key-0123456789abcdef',
      LOG_LEVEL: 'warn'
    },
    stdio: ['ignore', 'ignore', 'pipe']
  })
  let stderr = ''
  primary.stderr!.on('data', (chunk) => { stderr += String(chunk) })
  t.teardown(() => {
    for (const pid of childrenOf(primary.pid!)) process.kill(pid, 'SIGKILL')
    if (primary.exitCode === null && primary.signalCode === null) primary.kill('SIGKILL')
  })

  const ready = async () => (await fetch(`${url}/ready`).catch(() => undefined))?.status === 200
  // Generous: under a full test run, three processes compile the TypeScript on 2 cores.
  t.ok(await eventually(ready, 90_000, 200), 'the service answers')
  const two = await eventually(() => childrenOf(primary.pid!).length === 2, 30_000)
  t.ok(two, 'two service processes', { children: childrenOf(primary.pid!), stderr })

  const created = await fetch(`${url}/v1/sources`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify({ name: 'cluster' }) })
  const source = await created.json() as { id: string, writeKey: string }
  const auth = `Basic ${Buffer.from(`${source.writeKey}:`).toString('base64')}`
  // Keep-alive off: each request is a new connection, so both processes take some.
  const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => fetch(`${url}/v1/batch`, {
    method: 'POST',
    headers: { authorization: auth, 'content-type': 'application/json', connection: 'close' },
    body: JSON.stringify({ batch: [{ type: 'track', userId: `u${i}`, event: 'Signed Up', messageId: `cluster-${i}` }] })
  }).then((res) => res.status)))
  t.same(new Set(answers), new Set([200]), 'every request is taken')
  const stats = await (await fetch(`${url}/v1/sources/${source.id}/stats`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).json()
  t.match(stats, { received: 20, accepted: 20 })

  const [first] = childrenOf(primary.pid!)
  process.kill(first, 'SIGKILL')
  t.ok(await eventually(() => {
    const now = childrenOf(primary.pid!)
    return now.length === 2 && !now.includes(first)
  }, 60_000, 200), 'a process that died is replaced')
  t.ok(await eventually(ready, 60_000, 200), 'and the service still answers')

  const children = childrenOf(primary.pid!)
  const exited = once(primary, 'exit')
  primary.kill('SIGTERM')
  const [code] = await exited
  t.equal(code, 0, `SIGTERM: a clean exit ${stderr}`)
  t.same(children.filter((pid) => { try { process.kill(pid, 0); return true } catch { return false } }), [], 'no service process is left')
})
