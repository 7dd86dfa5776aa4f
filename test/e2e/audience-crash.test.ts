// A worker killed in the middle of an audience's initial sync loses nothing: the API runs here
// (ROLE api), the worker in a child process (ROLE worker, test/helpers/audience-worker.ts) that
// is held in the middle of the initial sync of 5,000 members and gets SIGKILL there. A new worker
// resumes the same sync from its cursor: every member is sent at least once, nobody is sent a
// wrong state, and the audience ends idle with every member counted.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { buildTestApp } from '../helpers/app.js'
import { createAudience, getAudience, ingest, ingestDrained, ORDERED_30_DAYS, trackBy, waitFor, waitForAudience } from '../helpers/audience-setup.js'
import { freshPrefix } from '../helpers/ingest-queue.js'
import { startTestRedis } from '../helpers/redis.js'
import { killWorkerProcess, startWorkerProcess, workerEnv } from '../helpers/worker-process.js'

const USERS = 5000

const redis = await startTestRedis()
t.teardown(() => redis.close())

interface Logged { userId: string, messageId: string, traits: Record<string, unknown>, context: { personas: { computation_id: string } } }

function readLog (file: string): Logged[] {
  if (!existsSync(file)) return []
  return readFileSync(file, 'utf8').split('\n').filter((line) => line !== '').map((line) => JSON.parse(line))
}

t.test('a worker killed mid initial sync: a new worker resumes it, every member is sent', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'audience-crash-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const logFile = join(dir, 'emitted.jsonl')
  const shared = freshPrefix(redis)
  const api = await buildTestApp(t, { redis: shared, env: { ROLE: 'api', INGEST_JOB_MAX_MESSAGES: '500' } })
  const env = workerEnv(api, { EMITTED_LOG: logFile })
  // Held at its second emission: the first chunk of members is sent and its cursor stored.
  const first = await startWorkerProcess(t, 'test/helpers/audience-worker.ts', { ...env, PAUSE_AT_EMIT: '2' })

  const source = await api.createSource()
  const users = Array.from({ length: USERS }, (_, i) => `user-${String(i).padStart(5, '0')}`)
  for (let i = 0; i < USERS; i += 2500) await ingest(api, source.writeKey, users.slice(i, i + 2500).map((id) => trackBy(id, 'Order Completed')))
  await ingestDrained(api, 60_000)

  const audience = await createAudience(api, source.id, { name: 'Buyers', condition: ORDERED_30_DAYS })
  let paused = false
  first.printed('paused').then(() => { paused = true }, () => {})
  await waitFor(async () => paused || (await getAudience(api, audience.id)).status === 'idle', 60_000, 'the initial sync to be under way')
  t.ok(paused, 'the initial sync has members to send: the audience was built over the history')
  if (!paused) return
  const midway = await api.app.audiences.state(audience.id)
  t.match(midway, { built: true, initialSynced: false, status: 'syncing' }, 'built, in the middle of the initial sync')
  t.not(midway.initialCursor, '0', 'the first chunk is done and its cursor stored')
  t.ok(midway.initialSent > 0 && midway.initialSent < USERS, `part of the members sent (${midway.initialSent})`)
  t.match(await getAudience(api, audience.id), { size: USERS, status: 'syncing', lastSync: null }, 'every user is a member; the GET shows the sync under way')
  await killWorkerProcess(first.child)

  await startWorkerProcess(t, 'test/helpers/audience-worker.ts', env)
  const done = await waitForAudience(api, audience.id, (a) => a.status === 'idle' && a.lastSync !== null, 'the new worker to finish the initial sync', 60_000)
  await ingestDrained(api, 60_000)
  t.equal(done.size, USERS)
  t.ok(done.lastSync.added >= USERS, `lastSync.added counts every member sent (${done.lastSync.added})`)
  t.equal(done.lastSync.removed, 0)
  t.equal((await api.app.audiences.state(audience.id)).initialRun, midway.initialRun, 'the same sync was resumed, not started over')

  let logged: Logged[] = []
  await waitFor(() => {
    logged = readLog(logFile).filter((entry) => entry.context.personas.computation_id === audience.id)
    return new Set(logged.map((entry) => entry.userId)).size >= USERS
  }, 30_000, () => `every member's identify to go through the pipeline (${new Set(logged.map((entry) => entry.userId)).size} users so far)`)
  const byUser = new Map<string, unknown[]>()
  for (const entry of logged) {
    const values = byUser.get(entry.userId) ?? []
    values.push(entry.traits.buyers)
    byUser.set(entry.userId, values)
  }
  t.same([...byUser.keys()].sort(), users, 'every member was sent, nobody else')
  t.ok([...byUser.values()].every((values) => values.every((value) => value === true)), 'every identify sent true: no member got a wrong state')
  const distinct = new Set(logged.map((entry) => entry.messageId)).size
  t.equal(distinct, USERS, 'a member sent twice (the chunk in flight at the crash) is sent under the same messageId')
})
