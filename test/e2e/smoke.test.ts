import t from 'tap'
import { Analytics } from '@segment/analytics-node'
import { startFakeGraph } from '../fixtures/fake-graph.js'
import { buildTestApp } from '../helpers/app.js'
import seed from '../fixtures/seed-examples.json' with { type: 'json' }

t.test('seed example reaches the fake Graph API', async (t) => {
  const graph = await startFakeGraph()
  t.teardown(() => graph.close())
  const ctx = await buildTestApp(t, { listen: true, env: { FACEBOOK_GRAPH_URL: graph.url } })
  const source = await ctx.createSource()
  const created = await ctx.admin('POST', `/v1/sources/${source.id}/destinations`, { type: 'facebook-offline-conversions', settings: seed.settings })
  t.equal(created.statusCode, 201, JSON.stringify(created.json))
  const put = await ctx.admin('PUT', `/v1/destinations/${created.json.id}/access-token`, { accessToken: 'test-token' })
  t.equal(put.statusCode, 204)
  const analytics = new Analytics({ writeKey: source.writeKey, host: ctx.url, path: '/v1/batch', flushAt: 10, flushInterval: 50, maxRetries: 0 })
  for (const m of seed.messages) {
    const { type, ...rest } = m as any
    ;(analytics as any)[type](rest)
  }
  await analytics.closeAndFlush()
  const deadline = Date.now() + 10000
  let stats: any
  while (Date.now() < deadline) {
    stats = (await ctx.admin('GET', `/v1/destinations/${created.json.id}/stats`)).json
    if (stats.retrying === 0 && stats.received > 0) break
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  console.error(JSON.stringify(stats), JSON.stringify(graph.received, null, 1).slice(0, 3000))
  t.ok(stats.delivered > 0)
})
