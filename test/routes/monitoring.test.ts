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
  t.match(api.body, /"name":"audience-sync"/, 'and the audience-sync queue')
})

t.test('/metrics counts the audience-sync queue\'s jobs too', async (t) => {
  const ctx = await buildTestApp(t, { env: { ROLE: 'api' } })
  const metrics = await ctx.app.inject({ url: '/metrics', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })
  for (const queue of ['ingest', 'deliver', 'audience-sync']) t.match(metrics.body, new RegExp(`relay_queue_jobs\\{queue="${queue}",state="waiting"\\} 0`), queue)
})

/** The dashboard's API (bull-board's, under /admin/queues/api), as its page calls it. */
function dashboard (ctx: Awaited<ReturnType<typeof buildTestApp>>, method: 'GET' | 'PUT', path: string) {
  return ctx.app.inject({ method, url: `/admin/queues/api/${path}`, headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })
}

/** A waiting ingest job (no worker runs in ROLE api). */
async function waitingIngestJob (ctx: Awaited<ReturnType<typeof buildTestApp>>): Promise<string> {
  const source = await ctx.createSource()
  const sent = await ctx.app.inject({ method: 'POST', url: '/v1/batch', headers: { authorization: basicAuth(source.writeKey) }, payload: { batch: [{ type: 'track', userId: 'u1', event: 'A' }] } })
  if (sent.statusCode !== 200) throw new Error(`batch: ${sent.statusCode} ${sent.body}`)
  const [job] = await ctx.app.queues.ingest.getJobs(['waiting'])
  return job.id!
}

t.test('the dashboard is read-only by default: every call that changes a queue or a job is refused', async (t) => {
  const ctx = await buildTestApp(t, { env: { ROLE: 'api' } })
  const jobId = await waitingIngestJob(ctx)
  const queues = (await dashboard(ctx, 'GET', 'queues')).json().queues as Array<{ name: string, readOnlyMode: boolean }>
  t.same(queues.map((queue) => [queue.name, queue.readOnlyMode]).sort(), [['audience-sync', true], ['deliver', true], ['ingest', true]], 'the page shows every queue read-only (no buttons)')

  for (const path of [`queues/ingest/${jobId}/clean`, `queues/ingest/${jobId}/retry`, `queues/ingest/${jobId}/promote`, 'queues/ingest/retry/failed', 'queues/ingest/clean/waiting', 'queues/ingest/pause', 'queues/ingest/empty', 'queues/ingest/obliterate']) {
    const refused = await dashboard(ctx, 'PUT', path)
    t.equal(refused.statusCode, 405, `PUT ${path} is refused`)
    t.match(refused.json(), { error: { key: 'ERRORS.QUEUE_READ_ONLY' } })
  }
  t.equal((await dashboard(ctx, 'PUT', 'queues/pause')).statusCode, 200, '"pause all" answers 200…')
  t.equal(await ctx.app.queues.ingest.isPaused(), false, '…and pauses nothing')
  t.equal(await ctx.app.queues.ingest.getJobState(jobId), 'waiting', 'the job is untouched')
  t.equal((await dashboard(ctx, 'GET', `queues/ingest/${jobId}`)).statusCode, 200, 'jobs can still be read')
})

t.test('ADMIN_DASHBOARD_WRITE=true lets the dashboard change queues and jobs', async (t) => {
  const ctx = await buildTestApp(t, { env: { ROLE: 'api', ADMIN_DASHBOARD_WRITE: 'true' } })
  const jobId = await waitingIngestJob(ctx)
  t.match((await dashboard(ctx, 'GET', 'queues')).json().queues, [{ readOnlyMode: false }, { readOnlyMode: false }, { readOnlyMode: false }])
  t.equal((await dashboard(ctx, 'PUT', `queues/ingest/${jobId}/retry`)).statusCode, 400, 'retry reaches the job (a waiting job is not retriable)')
  t.equal((await dashboard(ctx, 'PUT', 'queues/ingest/pause')).statusCode, 200)
  t.equal(await ctx.app.queues.ingest.isPaused(), true, 'the queue is paused')
  t.equal((await dashboard(ctx, 'PUT', `queues/ingest/${jobId}/clean`)).statusCode, 204)
  t.equal(await ctx.app.queues.ingest.getJob(jobId), undefined, 'the job is removed')
})

t.test('the admin API itself takes only Bearer, not Basic', async (t) => {
  const ctx = await buildTestApp(t, { env: { ROLE: 'api' } })
  const basic = await ctx.app.inject({ url: '/v1/sources', headers: { authorization: `Basic ${Buffer.from(`admin:${ADMIN_TOKEN}`).toString('base64')}` } })
  t.equal(basic.statusCode, 401)
})
