import { once } from 'node:events'
import type { ChildProcess } from 'node:child_process'

/**
 * Stops the service processes of a benchmark before its redis-server: a process whose Redis is
 * gone cannot close its queues, would linger, and could reconnect to the next run's Redis if it
 * got the same port. SIGTERM (a graceful shutdown), then SIGKILL after `graceMs`.
 */
export async function stopChildren (children: ChildProcess[], graceMs = 15_000): Promise<void> {
  await Promise.all(children.map(async (child) => {
    if (child.exitCode !== null || child.signalCode !== null) return
    const exited = once(child, 'exit')
    child.kill('SIGTERM')
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs)
    await exited
    clearTimeout(timer)
  }))
}
