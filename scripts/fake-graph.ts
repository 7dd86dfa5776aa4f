// Runs the fake Graph API for the demo and for manual checks:
//   npx tsx scripts/fake-graph.ts            (PORT=4100 by default)
// then start the relay with FACEBOOK_GRAPH_URL set to the printed URL. The fake takes the demo
// token (FAKE_GRAPH_TOKEN, default "demo-token") and "test-token"; with FACEBOOK_APP_ID and
// FACEBOOK_APP_SECRET set to the relay's values, the OAuth connect flow works against it too.
// A dev tool, not part of the app: it reads its own environment, outside the app's config schema.
import { DEFAULT_GRAPH_VERSION } from '../src/facebook/settings.js'
import { startFakeGraph } from '../test/fixtures/fake-graph.js'
import type { ReceivedBatch, Rejection } from '../test/fixtures/fake-graph.js'

const port = Number(process.env.PORT ?? 4100)
const token = process.env.FAKE_GRAPH_TOKEN ?? 'demo-token'

function logBatch (batch: ReceivedBatch): void {
  const { data, upload_tag: uploadTag, test_event_code: testEventCode } = batch.body
  const names = [...new Set(data.map((event) => String(event.event_name)))].join(', ')
  // event names and counts only: the events carry hashed customer data, which stays out of logs
  console.log(`${new Date(batch.at).toISOString()} accepted ${data.length} event(s) [${names}] ` +
    `for dataset ${batch.datasetId} on ${batch.version}` +
    (uploadTag === undefined ? '' : ` upload_tag=${uploadTag}`) +
    (testEventCode === undefined ? '' : ` test_event_code=${testEventCode}`))
}

function logRejection (rejection: Rejection): void {
  const what = rejection.error === undefined
    ? `${rejection.scripted ?? 'error'}`
    : `code ${rejection.error.code}${rejection.error.error_subcode === undefined ? '' : `/${rejection.error.error_subcode}`}: ${rejection.error.message}`
  console.log(`${new Date().toISOString()} rejected a batch for dataset ${rejection.datasetId} (HTTP ${rejection.status}) ${what}`)
}

const graph = await startFakeGraph({
  port,
  tokens: [token, 'test-token'],
  appId: process.env.FACEBOOK_APP_ID,
  appSecret: process.env.FACEBOOK_APP_SECRET,
  onBatch: logBatch,
  onReject: logRejection
})

console.log(`fake Graph API listening at ${graph.url}`)
console.log(`  access token: ${token}`)
console.log(`  relay:        FACEBOOK_GRAPH_URL=${graph.url}`)
console.log(`  events:       POST ${graph.url}/${DEFAULT_GRAPH_VERSION}/<datasetId>/events  (any numeric dataset id)`)

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    graph.close().then(() => process.exit(0), () => process.exit(1))
  })
}
