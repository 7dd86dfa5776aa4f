import { spawn, type ChildProcess } from 'node:child_process'
import { mkdirSync } from 'node:fs'
import { createServer, Socket } from 'node:net'
import { delimiter, join, resolve } from 'node:path'
import { existsSync } from 'node:fs'

/** Answers true when something at host:port replies to PING like Redis. */
export function redisAnswers (host: string, port: number, timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = new Socket()
    const done = (ok: boolean) => { socket.destroy(); resolve(ok) }
    socket.setTimeout(timeoutMs, () => done(false))
    socket.once('error', () => done(false))
    socket.connect(port, host, () => socket.write('PING\r\n'))
    socket.once('data', (data) => done(data.toString().startsWith('+PONG') || data.toString().startsWith('-NOAUTH')))
  })
}

export function findOnPath (binary: string, path = process.env.PATH ?? ''): string | undefined {
  for (const dir of path.split(delimiter)) {
    const candidate = join(dir, binary)
    if (dir !== '' && existsSync(candidate)) return candidate
  }
  return undefined
}

export function freePort (): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.unref()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number }
      server.close(() => resolve(port))
    })
  })
}

export interface LocalRedis {
  url: string
  process: ChildProcess
  stop: () => Promise<void>
}

/**
 * The AOF size past which the local Redis rewrites it (`auto-aof-rewrite-min-size`). Every request
 * body is written to the AOF once and deleted once processed: until the next rewrite, processed
 * bodies — raw messages — can still be read from the file. A lower bound keeps less of them on
 * disk and rewrites more often (docs/operations.md has what each costs). Redis's default, 64 MB,
 * forked a rewrite every second or two under load, rewriting a whole backlog each time.
 */
export const AOF_REWRITE_MIN_SIZE = '256mb'

export interface RedisServerOptions {
  binary: string
  dir: string
  port?: number
  appendonly?: boolean
  aofRewriteMinSize?: string
  /** `noeviction` unless a test wants a Redis configured as the service must refuse. */
  maxmemoryPolicy?: string
  /** More `--name value` arguments (tests: `--requirepass`, an ACL user). */
  extraArgs?: string[]
  /**
   * The service's own Redis: in a process group of its own, so that a terminal's Ctrl-C (sent to
   * the whole foreground group) does not stop Redis while the service still drains into it; the
   * service stops it last, and on any exit of its process.
   */
  ownProcessGroup?: boolean
}

/**
 * Starts a redis-server as this service wants it: AOF on with fsync every second (at most ~1 s of
 * acknowledged messages lost if Redis itself crashes), `noeviction` (BullMQ must never lose keys
 * to eviction), data under `dir`, the AOF rewritten past `aofRewriteMinSize`.
 */
export async function startRedisServer (options: RedisServerOptions): Promise<LocalRedis> {
  const dir = resolve(options.dir)
  mkdirSync(dir, { recursive: true })
  const port = options.port ?? await freePort()
  const child = spawn(options.binary, [
    '--port', String(port),
    '--bind', '127.0.0.1',
    '--dir', dir,
    '--appendonly', options.appendonly === false ? 'no' : 'yes',
    '--appendfsync', 'everysec',
    '--auto-aof-rewrite-min-size', options.aofRewriteMinSize ?? AOF_REWRITE_MIN_SIZE,
    '--save', '',
    '--maxmemory-policy', options.maxmemoryPolicy ?? 'noeviction',
    '--daemonize', 'no',
    ...(options.extraArgs ?? [])
  ], { stdio: ['ignore', 'ignore', 'inherit'], detached: options.ownProcessGroup === true })
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  // A process group of its own is no longer stopped by a signal to ours: stop it on any exit
  // (process.exit after a shutdown timeout included). A SIGKILL of this process still leaves it.
  const stopOnExit = () => { if (child.exitCode === null) child.kill('SIGTERM') }
  if (options.ownProcessGroup === true) process.once('exit', stopOnExit)
  const deadline = Date.now() + 10_000
  while (!(await redisAnswers('127.0.0.1', port))) {
    if (child.exitCode !== null) throw new Error(`redis-server exited with code ${child.exitCode} (is 127.0.0.1:${port} taken?)`)
    if (Date.now() > deadline) { child.kill('SIGKILL'); throw new Error('redis-server did not start within 10 s') }
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  return {
    url: `redis://127.0.0.1:${port}`,
    process: child,
    stop: async () => {
      process.removeListener('exit', stopOnExit)
      if (child.exitCode === null) child.kill('SIGTERM')
      await exited
    }
  }
}
