import t from 'tap'
import { ADMIN_TOKEN, basicAuth, buildTestApp } from '../helpers/app.js'

t.test('/metrics: Prometheus text with queue depths and per-source counts, behind the admin token', async (t) => {
  const ctx = await buildTestApp(t, { env: { ROLE: 'api' } })
  const source = await ctx.createSource()
  const sent = await ctx.app.inject({ method: 'POST', url: '/v1/batch', headers: { authorization: basicAuth(source.writeKey) }, payload: { batch: [{ type: 'track', userId: 'u1', event: 'A' }, { type: 'track', event: 'no user' }] } })
  t.equal(sent.statusCode, 200)

  const anonymous = await ctx.app.inject({ url: '/metrics' })
  t.equal(anonymous.statusCode, 401, 'no token, no metrics')
  t.match(anonymous.json().message, /admin token/)

  const metrics = await ctx.app.inject({ url: '/metrics', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })
  t.equal(metrics.statusCode, 200)
  t.match(metrics.headers['content-type'], /text\/plain/)
  t.match(metrics.body, /relay_queue_jobs\{queue="ingest",state="waiting"\} 1/, 'the waiting ingest job (no worker in ROLE api)')
  t.match(metrics.body, new RegExp(`relay_source_messages\\{source="${source.id}",outcome="accepted"\\} 1`))
  t.match(metrics.body, new RegExp(`relay_source_messages\\{source="${source.id}",outcome="rejected"\\} 1`))
  t.match(metrics.body, /process_cpu_user_seconds_total/, 'and the process metrics')
})

t.test('METRICS_PUBLIC serves /metrics without a token', async (t) => {
  const ctx = await buildTestApp(t, { env: { ROLE: 'api', METRICS_PUBLIC: 'true' } })
  t.equal((await ctx.app.inject({ url: '/metrics' })).statusCode, 200)
})

t.test('/admin/queues: the dashboard, for the admin token as Bearer or as the Basic password', async (t) => {
  const ctx = await buildTestApp(t, { env: { ROLE: 'api' } })
  const anonymous = await ctx.app.inject({ url: '/admin/queues' })
  t.equal(anonymous.statusCode, 401)
  t.match(anonymous.headers['www-authenticate'], /^Basic/, 'a browser is asked to log in')
  const wrong = await ctx.app.inject({ url: '/admin/queues', headers: { authorization: `Basic ${Buffer.from('admin:wrong').toString('base64')}` } })
  t.equal(wrong.statusCode, 401)
  const browser = await ctx.app.inject({ url: '/admin/queues', headers: { authorization: `Basic ${Buffer.from(`admin:${ADMIN_TOKEN}`).toString('base64')}` } })
  t.equal(browser.statusCode, 200)
  t.match(browser.body, /<html/i)
  const api = await ctx.app.inject({ url: '/admin/queues/api/queues', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })
  t.equal(api.statusCode, 200)
  t.match(api.body, /"name":"ingest"/, 'the dashboard lists the ingest queue')
  t.match(api.body, /"name":"deliver"/, 'and the deliver queue')
})

t.test('the admin API itself takes only Bearer, not Basic', async (t) => {
  const ctx = await buildTestApp(t, { env: { ROLE: 'api' } })
  const basic = await ctx.app.inject({ url: '/v1/sources', headers: { authorization: `Basic ${Buffer.from(`admin:${ADMIN_TOKEN}`).toString('base64')}` } })
  t.equal(basic.statusCode, 401)
})
