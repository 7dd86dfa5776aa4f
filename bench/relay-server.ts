import { buildApp } from '../src/app.js'
import { loadConfig } from '../src/config.js'

// The real service for bench/ingest.ts, configured from the environment like `npm start`.
const app = await buildApp({ config: loadConfig() })
const url = await app.listen({ port: Number(process.env.PORT ?? 0), host: '127.0.0.1' })
process.send?.({ url })
// bench/deliver.ts asks for the peak memory before it stops the process.
process.on('message', (message) => {
  if (message === 'memory') process.send?.({ maxRss: process.resourceUsage().maxRSS })
})
process.on('SIGTERM', () => { app.close().then(() => process.exit(0), () => process.exit(1)) })
