import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import { ADMIN_TOKEN, type TestContext } from './app.js'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))

interface Teardown { teardown: (fn: () => unknown) => void }

/**
 * The environment of a worker process beside a test's API app: its Redis, key prefix and
 * secrets; a dead worker's jobs and locks taken over within about a second; no logs.
 */
export function workerEnv (api: TestContext, extra: Record<string, string> = {}): Record<string, string> {
  return {
    REDIS_URL: api.redis.url,
    ...(api.redis.clusterNodes === undefined ? {} : { REDIS_CLUSTER_NODES: api.redis.clusterNodes }),
    REDIS_PREFIX: api.config.REDIS_PREFIX,
    ROLE: 'worker',
    SECRET_KEY: api.config.SECRET_KEY!,
    ADMIN_TOKEN,
    STALLED_INTERVAL_MS: '1000',
    LOG_LEVEL: 'silent',
    ...extra
  }
}

export interface WorkerProcess {
  child: ChildProcess
  /** Resolves once the process has printed `text` on its stdout (at any time, before or after). */
  printed: (text: string) => Promise<void>
}

/**
 * A worker role in a child process (a script under test/helpers that prints "ready" once it
 * consumes), so a test can SIGKILL it like a crash. Killed in teardown if still running.
 */
export async function startWorkerProcess (t: Teardown, script: string, env: Record<string, string>): Promise<WorkerProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', script], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  t.teardown(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
  let stdout = ''
  let stderr = ''
  child.stdout!.on('data', (chunk) => { stdout += String(chunk) })
  child.stderr!.on('data', (chunk) => { stderr += String(chunk) })
  const printed = (text: string) => new Promise<void>((resolve) => {
    const check = () => { if (stdout.includes(text)) { child.stdout!.off('data', check); resolve() } }
    child.stdout!.on('data', check)
    check()
  })
  await new Promise<void>((resolve, reject) => {
    printed('ready').then(resolve, reject)
    child.once('exit', (code) => reject(new Error(`worker process exited (${code}) before it was ready: ${stderr}`)))
  })
  return { child, printed }
}

/** SIGKILL: the process dies with its jobs in hand, as in a crash. */
export async function killWorkerProcess (child: ChildProcess): Promise<void> {
  const exited = once(child, 'exit')
  child.kill('SIGKILL')
  await exited
}
