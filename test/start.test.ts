import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, rmSync } from 'node:fs'
import { request } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { Redis } from 'ioredis'
import t, { type Test } from 'tap'
import { findOnPath, freePort, redisAnswers, startRedisServer } from '../src/local-redis.js'
import { redisKeys } from '../src/keys.js'
import { eventually } from './helpers/ingest-queue.js'

/**
 * `npm start` as a supervisor runs it (systemd, a container, a process manager): the signal goes
 * to the npm process, and everything it started must stop — the service, its cluster processes,
 * the redis-server it launched. And what it says: JSON log lines when its output is not a
 * terminal, the start-up summary, the refusal of a Redis that evicts, the shutdown's account.
 * The build is made once here; `npm start --ignore-scripts` runs the start script without
 * `prestart` (which builds again).
 */

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const ADMIN_TOKEN = 'start-test-admin-token-0123'
const SECRET_KEY = 'start-test-secret-key-0123456789abcdef'
/** The Node.js major every process of this run must be (CI runs the suite on two: .ci/run). */
const NODE_MAJOR = process.env.EXPECT_NODE_MAJOR ?? process.versions.node.split('.')[0]

type LogLine = Record<string, any>

interface Service {
  child: ChildProcess
  lines: LogLine[]
  /** What is not a log line: npm's banner and anything else printed. */
  other: string[]
  stderr: () => string
  /** The first log line that `match` accepts, once it has been written. */
  line: (match: (line: LogLine) => boolean, timeoutMs?: number) => Promise<LogLine>
  exited: Promise<number | null>
}

function alive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

const httpClosed = (port: number) => fetch(`http://127.0.0.1:${port}/health`).then(() => false, () => true)

/**
 * `npm start` in a process group of its own, as a terminal or a supervisor would start it; its
 * stdout is a pipe. Everything it started is killed in teardown.
 */
function startService (t: Test, env: Record<string, string>): Service {
  const child = spawn('npm', ['start', '--ignore-scripts'], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ADMIN_TOKEN, SECRET_KEY, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true
  })
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  const lines: LogLine[] = []
  const other: string[] = []
  let stdout = ''
  let stderr = ''
  const waiting = new Set<() => void>()
  child.stdout!.on('data', (chunk) => {
    stdout += String(chunk)
    let end
    while ((end = stdout.indexOf('\n')) !== -1) {
      const text = stdout.slice(0, end)
      stdout = stdout.slice(end + 1)
      if (text.startsWith('{')) lines.push(JSON.parse(text))
      else if (text.trim() !== '') other.push(text)
    }
    for (const wake of waiting) wake()
  })
  child.stderr!.on('data', (chunk) => { stderr += String(chunk) })
  const pids = () => [...new Set(lines.flatMap((line) => [line.pid, line.redisPid]).filter((pid) => typeof pid === 'number'))]
  t.teardown(() => {
    // What is still running of this run (it failed): the group, then what left the group.
    if (alive(child.pid!)) process.kill(-child.pid!, 'SIGKILL')
    for (const pid of pids()) if (alive(pid)) process.kill(pid, 'SIGKILL')
  })
  const line = (match: (line: LogLine) => boolean, timeoutMs = 45_000) => new Promise<LogLine>((resolve, reject) => {
    const timer = setTimeout(() => { waiting.delete(check); reject(new Error(`no such log line within ${timeoutMs} ms; stderr: ${stderr}; lines: ${JSON.stringify(lines.map((l) => l.msg))}`)) }, timeoutMs)
    const check = () => {
      const found = lines.find(match)
      if (found === undefined) return
      clearTimeout(timer)
      waiting.delete(check)
      resolve(found)
    }
    waiting.add(check)
    check()
  })
  return { child, lines, other, stderr: () => stderr, line, exited }
}

const running = (line: LogLine) => typeof line.msg === 'string' && line.msg.startsWith('conversion relay is running')
const shutDown = (line: LogLine) => typeof line.msg === 'string' && line.msg.startsWith('shut down in')

// The service launches a redis-server, and these tests start ones of their own configurations.
const SKIP = findOnPath('redis-server') === undefined ? 'needs redis-server on PATH' : false

t.before(async () => {
  // Without type checking (npm run typecheck does that): the build is for running.
  await promisify(execFile)('npm', ['run', 'build', '--', '--noCheck'], { cwd: ROOT })
})

t.test('npm start, SIGTERM to npm: a request in flight is answered and stored, then the service and its port are gone; logs are JSON through a pipe', { skip: SKIP }, async (t) => {
  // A Redis that would lose jobs, allowed: the warnings and the summary say what it is.
  const binary = findOnPath('redis-server')!
  const dir = mkdtempSync(join(tmpdir(), 'relay-start-'))
  const redis = await startRedisServer({ binary, dir, maxmemoryPolicy: 'allkeys-lru', appendonly: false })
  t.teardown(async () => { await redis.stop(); rmSync(dir, { recursive: true, force: true }) })
  const port = await freePort()
  const prefix = 'start-test'
  const service = startService(t, {
    PORT: String(port),
    REDIS_URL: redis.url,
    REDIS_PREFIX: prefix,
    REDIS_ALLOW_EVICTION: 'true',
    DATA_DIR: join(dir, 'data'),
    FACEBOOK_GRAPH_URL: 'http://127.0.0.1:9/graph'
  })

  const summary = await service.line(running)
  t.match(summary.startup, {
    role: 'all',
    processes: 1,
    port,
    redis: { url: redis.url, origin: 'REDIS_URL', maxmemoryPolicy: 'allkeys-lru', appendonly: 'no', appendfsync: 'everysec' },
    graphUrl: 'http://127.0.0.1:9/graph',
    adminToken: 'ADMIN_TOKEN'
  }, 'the summary: role, port, which Redis and how it keeps data, the Graph URL, where the admin token is')
  t.equal(summary.startup.node.split('.')[0], NODE_MAJOR, `the service runs Node.js ${NODE_MAJOR}`)
  t.match(summary.msg, `Redis ${redis.url} (REDIS_URL; maxmemory-policy allkeys-lru, appendonly no, appendfsync everysec)`)
  const warnings = service.lines.filter((line) => line.level === 40).map((line) => line.msg)
  t.ok(warnings.some((msg) => /maxmemory-policy is "allkeys-lru".*REDIS_ALLOW_EVICTION=true/.test(msg)), 'eviction allowed: said loudly')
  t.ok(warnings.some((msg) => /without its AOF \(appendonly no\)/.test(msg)), 'AOF off: said loudly')
  const server = summary.pid as number
  t.not(server, service.child.pid, 'npm runs the service as a child process')

  const url = `http://127.0.0.1:${port}`
  t.ok(await eventually(async () => (await fetch(`${url}/ready`).catch(() => undefined))?.status === 200, 30_000, 100), 'ready')
  const created = await fetch(`${url}/v1/sources`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify({ name: 'start' }) })
  const source = await created.json() as { id: string, writeKey: string }

  // A request whose body has not all arrived when the signal comes.
  let finish = () => {}
  const body = JSON.stringify({ type: 'track', userId: 'u1', event: 'Signed Up', messageId: 'in-flight-1' })
  const answer = new Promise<{ status: number, connection?: string, body: string }>((resolve, reject) => {
    const req = request(`${url}/v1/track`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`${source.writeKey}:`).toString('base64')}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }
    }, (res) => {
      let text = ''
      res.on('data', (chunk) => { text += String(chunk) })
      res.on('end', () => resolve({ status: res.statusCode!, connection: res.headers.connection, body: text }))
    })
    req.on('error', reject)
    req.write(body.slice(0, 10))
    finish = () => req.end(body.slice(10))
  })
  // Its headers reach the server before this probe's answer comes back.
  await fetch(`${url}/health`)
  await new Promise((resolve) => setTimeout(resolve, 300))

  process.kill(service.child.pid!, 'SIGTERM')
  const stopping = await service.line((line) => /^shutting down \(SIGTERM\)/.test(line.msg))
  t.equal(stopping.inHand.requests, 1, 'the request in flight is in hand')
  finish()
  // Closed after the answer: a kept-alive connection would hold the shutdown until the client let go.
  t.same(await answer, { status: 200, connection: 'close', body: '{"success":true}' }, 'and answered once its body arrives, closing its connection')

  t.equal(await service.exited, 0, 'npm exits, with the service\'s clean exit')
  t.notOk(alive(server), 'the service process is gone')
  t.ok(await httpClosed(port), 'the port is closed')
  const drained = await service.line(shutDown, 1000)
  t.match(drained, { reason: 'SIGTERM', finished: { requests: Number, ingestFlushes: Number, ingestJobs: Number, deliverJobs: Number, audienceSyncJobs: Number } }, 'one line says what was drained')
  t.ok(drained.finished.requests >= 1 && drained.finished.ingestFlushes >= 1, `the request and its flush among it: ${drained.msg}`)

  const check = new Redis(redis.url)
  t.teardown(() => check.quit())
  t.match(await check.hgetall(redisKeys(prefix).sourceStats(source.id)), { accepted: '1' }, 'the message answered during the shutdown is stored')
  t.same(service.other.filter((text) => !text.startsWith('> ')), [], 'nothing but npm\'s banner and JSON lines on stdout')
})

t.test('npm start launches a redis-server when none answers on REDIS_LOCAL_PORT; Ctrl-C in a terminal drains the service, then stops that redis-server', { skip: SKIP }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'relay-start-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const [port, redisPort] = [await freePort(), await freePort()]
  const service = startService(t, { PORT: String(port), REDIS_LOCAL_PORT: String(redisPort), DATA_DIR: join(dir, 'data') })
  const launched = await service.line((line) => line.msg?.startsWith('started a local redis-server'))
  t.equal(launched.url, `redis://127.0.0.1:${redisPort}`, 'on REDIS_LOCAL_PORT')
  const summary = await service.line(running)
  t.match(summary.startup.redis, { url: `redis://127.0.0.1:${redisPort}`, origin: 'launched', maxmemoryPolicy: 'noeviction', appendonly: 'yes', appendfsync: 'everysec' })
  t.notOk(service.lines.some((line) => line.level >= 40 && /Redis|AOF/.test(line.msg)), 'no warning about the Redis it launched')

  // A terminal sends SIGINT to its whole foreground process group: npm and the service (npm
  // forwards its copy too). The redis-server is in a group of its own: it outlives the drain.
  process.kill(-service.child.pid!, 'SIGINT')
  t.equal(await service.exited, 0, 'npm exits cleanly')
  const drained = await service.line(shutDown, 1000)
  t.match(drained, { reason: 'SIGINT', localRedis: 'stopped' }, 'the service drained, then stopped its redis-server')
  t.notOk(service.lines.some((line) => /second SIGINT/.test(line.msg)), 'the two copies of one Ctrl-C are one request to stop')
  t.notOk(alive(summary.pid), 'the service process is gone')
  t.notOk(alive(launched.redisPid), 'the redis-server is gone')
  t.notOk(await redisAnswers('127.0.0.1', redisPort), 'nothing answers on REDIS_LOCAL_PORT')
  t.ok(await httpClosed(port), 'the port is closed')
})

t.test('PROCESSES=2: SIGTERM to npm stops the primary, both service processes and the redis-server it launched', { skip: SKIP }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'relay-start-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const [port, redisPort] = [await freePort(), await freePort()]
  const service = startService(t, { PORT: String(port), REDIS_LOCAL_PORT: String(redisPort), DATA_DIR: join(dir, 'data'), PROCESSES: '2' })
  const launched = await service.line((line) => line.msg?.startsWith('started a local redis-server'))
  const summary = await service.line(running)
  t.match(summary.startup, { processes: 2, redis: { origin: 'launched' } })
  await service.line((line) => service.lines.filter((l) => l.msg === 'service process listening').length === 2)
  const processes = service.lines.filter((line) => line.msg === 'service process listening').map((line) => line.pid as number)
  t.equal(new Set(processes).size, 2, 'two service processes')

  process.kill(service.child.pid!, 'SIGTERM')
  t.equal(await service.exited, 0, `npm exits cleanly ${service.stderr()}`)
  t.equal(service.lines.filter(shutDown).length, 2, 'each service process says what it drained')
  t.same([summary.pid, ...processes, launched.redisPid].filter(alive), [], 'the primary, the service processes and the redis-server are gone')
  t.notOk(await redisAnswers('127.0.0.1', redisPort), 'nothing answers on REDIS_LOCAL_PORT')
  t.ok(await httpClosed(port), 'the port is closed')
})

t.test('a Redis that evicts keys is refused: exit 1, naming the policy and REDIS_ALLOW_EVICTION — on a terminal, in pino-pretty\'s lines', { skip: SKIP }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'relay-start-'))
  const redis = await startRedisServer({ binary: findOnPath('redis-server')!, dir, maxmemoryPolicy: 'allkeys-lru' })
  t.teardown(async () => { await redis.stop(); rmSync(dir, { recursive: true, force: true }) })
  // script(1) runs the command on a pseudo-terminal of its own and copies what it prints (-e: with
  // its exit code), as a person starting it in a terminal would see it. Without script(1): a pipe.
  const terminal = findOnPath('script') !== undefined
  const command = `${process.execPath} dist/src/server.js`
  const child = spawn(terminal ? 'script' : process.execPath, terminal ? ['-qec', command, '/dev/null'] : ['dist/src/server.js'], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ADMIN_TOKEN, SECRET_KEY, PORT: String(await freePort()), REDIS_URL: redis.url, DATA_DIR: join(dir, 'data') },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let output = ''
  child.stdout!.on('data', (chunk) => { output += String(chunk) })
  const [code] = await once(child, 'exit')
  // eslint-disable-next-line no-control-regex
  const text = output.replace(/\x1b\[[0-9;]*m/g, '')
  t.equal(code, 1, 'exit code 1')
  t.match(text, /not starting: Redis's maxmemory-policy is "allkeys-lru".*BullMQ loses jobs.*REDIS_ALLOW_EVICTION=true/, 'the message names the policy and the variable')
  t.notMatch(text, /conversion relay is running/, 'it never ran')
  if (terminal) {
    t.match(text, /^\[\d\d:\d\d:\d\d\.\d{3}\] FATAL \(\d+\): not starting/m, 'a time, a level and the message, as a person reads them — written before the exit')
    t.notMatch(text, /^\{/m, 'no JSON on a terminal')
  }
})
