// The service as a worker (ROLE worker) in a process of its own, configured from its environment
// like `npm start`, for the audience crash test. Prints "ready" once it consumes the queues.
// - EMITTED_LOG: a file to which every message with `context.personas` that goes through its
//   ingest pipeline is appended, one JSON line each (the emitted identifies, as routed).
// - PAUSE_AT_EMIT=n: the n-th time the audience engine emits, it prints "paused" and hangs there
//   (the sync is mid-way: the test kills the process then).
import { appendFileSync } from 'node:fs'
import { buildApp } from '../../src/app.js'
import { loadConfig } from '../../src/config.js'

const app = await buildApp({ config: loadConfig(process.env) })
const log = process.env.EMITTED_LOG
if (log !== undefined) {
  app.workers.ingestStages.push(async (sourceId, messages) => {
    const lines = messages
      .filter((m) => (m.context as { personas?: unknown } | undefined)?.personas !== undefined)
      .map((m) => JSON.stringify({ sourceId, userId: m.userId, messageId: m.messageId, traits: m.traits, context: m.context }) + '\n')
    if (lines.length > 0) appendFileSync(log, lines.join(''))
  })
}
const pauseAt = Number(process.env.PAUSE_AT_EMIT ?? 0)
if (pauseAt > 0) {
  const engine = app.audienceEngine as unknown as { emit: (...args: unknown[]) => Promise<void> }
  const emit = engine.emit.bind(engine)
  let calls = 0
  engine.emit = async (...args: unknown[]) => {
    if (++calls === pauseAt) {
      process.stdout.write('paused\n')
      await new Promise(() => {})
    }
    return emit(...args)
  }
}
await app.ready()
process.stdout.write('ready\n')
process.once('SIGTERM', () => { app.close().finally(() => process.exit(0)) })
