// The service as a worker (ROLE worker) in a process of its own, configured from its environment
// like `npm start`: the crash test kills it with SIGKILL mid-delivery. Prints "ready" once it
// consumes the queues.
import { buildApp } from '../../src/app.js'
import { loadConfig } from '../../src/config.js'

const app = await buildApp({ config: loadConfig(process.env) })
await app.ready()
process.stdout.write('ready\n')
process.once('SIGTERM', () => { app.close().finally(() => process.exit(0)) })
