// A worker (ROLE worker, configured from its environment) whose ingest jobs stop for good after
// every stage has run — after the job's counts, before its end — when a message's id starts with
// `hang-`: it prints "counted" there, and the crash test kills it inside that window.
import { buildApp } from '../../src/app.js'
import { loadConfig } from '../../src/config.js'

const app = await buildApp({ config: loadConfig(process.env) })
app.workers.ingestStages.push(async (_sourceId, messages) => {
  if (!messages.some((message) => message.messageId.startsWith('hang-'))) return
  process.stdout.write('counted\n')
  await new Promise(() => {})
})
await app.ready()
process.stdout.write('ready\n')
