/**
 * `npm run bench:audiences` — the audience engine at scale, in one run, on this machine:
 * 1,000,000 users with a profile (email, phone) and history, built through the engine's own
 * ingest stage; then an audience built over that history (time, peak Redis memory), its initial
 * sync (1,000,000 identifies emitted and processed by the ingest workers), an incremental sync
 * where 1 % of members changed, and Redis bytes per profile and per (user, tracked event).
 * Not a test: it prints figures. BENCH_USERS changes the size.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { buildApp } from '../src/app.js'
import { loadConfig } from '../src/config.js'
import { JobIsolation } from '../jobs/isolation.js'
import { findOnPath, startRedisServer } from '../src/local-redis.js'
import type { SegmentMessage } from '../src/segment/types.js'
import { parseCondition } from '../src/audiences/condition.js'
import { parseSchedule } from '../src/audiences/schedule.js'

const USERS = Number(process.env.BENCH_USERS ?? 1_000_000)
const CHUNK = 2000
const binary = findOnPath('redis-server')
if (binary === undefined) throw new Error('bench:audiences needs redis-server on PATH')
const dir = mkdtempSync(join(tmpdir(), 'relay-bench-audiences-'))
const server = await startRedisServer({ binary, dir })
const probe = new Redis(server.url)
const app = await buildApp({
  config: loadConfig({ REDIS_URL: server.url, LOG_LEVEL: 'warn', ADMIN_TOKEN: 'bench-admin-token-0123456789', SECRET_KEY: 'bench-secret-key-0123456789abcdef0123456789', INGEST_CONCURRENCY: '8' })
})
await app.ready()
const engine = app.audienceEngine
const mib = (bytes: number) => `${(bytes / 1048576).toFixed(1)} MiB`
const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`
async function usedMemory (): Promise<number> {
  const info = await probe.info('memory')
  return Number(/used_memory:(\d+)/.exec(info)![1])
}
async function peakMemory (): Promise<number> {
  const info = await probe.info('memory')
  return Number(/used_memory_peak:(\d+)/.exec(info)![1])
}
async function drained (): Promise<void> {
  for (;;) {
    const counts = await app.queues.ingest.getJobCounts('waiting', 'active', 'delayed')
    if (counts.waiting + counts.active + counts.delayed === 0) return
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

try {
  const source = await app.sources.create('bench')
  const now = new Date().toISOString()
  const day = 86_400_000
  console.log(`audience benchmark: ${USERS.toLocaleString('en')} users, node ${process.version}, its own redis-server (AOF everysec)`)

  // Profiles and history through the engine's ingest stage: an identify (email, phone) and one
  // to three orders in the last 20 days per user; 1 % of users never ordered.
  let started = Date.now()
  for (let first = 0; first < USERS; first += CHUNK / 2) {
    const messages: SegmentMessage[] = []
    for (let i = first; i < Math.min(USERS, first + CHUNK / 2); i++) {
      const base = { messageId: `m-${i}`, userId: `user-${i}`, originalTimestamp: now, receivedAt: now }
      messages.push({ ...base, type: 'identify', timestamp: now, traits: { email: `user-${i}@example.com`, phone: `+1401${String(1000000 + i).slice(-7)}`, plan: i % 10 === 0 ? 'pro' : 'free' } })
      if (i % 100 !== 0) messages.push({ ...base, messageId: `t-${i}`, type: 'track', event: 'Order Completed', timestamp: new Date(Date.now() - (i % 20) * day).toISOString(), properties: { revenue: 10 } })
    }
    await engine.stage(source.id, messages, new JobIsolation().context(source.id))
  }
  console.log(`loaded ${USERS.toLocaleString('en')} profiles and their history in ${seconds(Date.now() - started)} (through the ingest stage)`)
  const memoryBefore = await usedMemory()

  const condition = parseCondition({ type: 'event', event: 'Order Completed', atLeast: 1, withinDays: 30 }, { retentionDays: 90 })
  if ('error' in condition) throw new Error(condition.error)
  const schedule = parseSchedule(undefined)
  if ('error' in schedule) throw new Error(schedule.error)
  const audience = (await app.audiences.create({ sourceId: source.id, name: 'Order Completed Last 30days', key: 'order_completed_last_30days', condition: condition.condition, destinations: [], schedule }))!
  started = Date.now()
  await engine.build(audience, await app.audiences.state(audience.id))
  const buildMs = Date.now() - started
  const size = await app.audiences.size(audience.id)
  console.log(`build:       ${size.toLocaleString('en')} members over the history in ${seconds(buildMs)}; Redis ${mib(memoryBefore)} → ${mib(await usedMemory())}, peak ${mib(await peakMemory())}`)

  started = Date.now()
  await engine.initialSync(audience, await app.audiences.state(audience.id))
  const emittedMs = Date.now() - started
  await drained()
  const initialMs = Date.now() - started
  console.log(`initial sync: ${size.toLocaleString('en')} identifies emitted in ${seconds(emittedMs)}, emitted and processed in ${seconds(initialMs)} (target ≤ 60 s; Segment documents 6+ hours)`)

  // 1 % of members change: the users who never ordered order now (they enter, in real time).
  const changed: SegmentMessage[] = []
  for (let i = 0; i < USERS; i += 100) changed.push({ type: 'track', messageId: `late-${i}`, userId: `user-${i}`, event: 'Order Completed', timestamp: now, originalTimestamp: now, receivedAt: now })
  for (let i = 0; i < changed.length; i += CHUNK) await engine.stage(source.id, changed.slice(i, i + CHUNK), new JobIsolation().context(source.id))
  started = Date.now()
  const { added, removed } = await engine.incrementalSync(audience)
  await drained()
  console.log(`incremental: ${added + removed} changed members (${added} in, ${removed} out) synced and processed in ${seconds(Date.now() - started)} (target ≤ 2 s)`)

  // Redis bytes: a profile with email, phone and two audience properties; one with all ten
  // match keys; and history per (user, tracked event).
  await engine.stage(source.id, [{ type: 'identify', messageId: 'full', userId: 'user-1', timestamp: now, originalTimestamp: now, receivedAt: now, traits: { email: 'user-1@example.com', phone: '+14011000001', firstName: 'Ham', lastName: 'Solo', gender: 'male', birthday: '1977-05-25', address: { city: 'East Greenwich', state: 'RI', postalCode: '02818', country: 'US' }, plan: 'free' } }], new JobIsolation().context(source.id))
  const sample = async (key: string) => Number(await probe.call('MEMORY', 'USAGE', key, 'SAMPLES', '0'))
  await probe.hset(app.keys.profile(source.id, 'user-2'), 'a:second_audience', '1')
  const typical = await sample(app.keys.profile(source.id, 'user-2'))
  const full = await sample(app.keys.profile(source.id, 'user-1'))
  // History lives in the profile hash: the cost of one (user, tracked event) is what 10,000
  // users' profile hashes grow by (MEMORY USAGE, summed) when each gets one tracked event.
  const extra = 10_000
  const identifies: SegmentMessage[] = []
  for (let i = 0; i < extra; i++) identifies.push({ type: 'identify', messageId: `x-${i}`, userId: `extra-${i}`, timestamp: now, originalTimestamp: now, receivedAt: now, traits: { email: `extra-${i}@example.com` } })
  for (let i = 0; i < extra; i += CHUNK) await engine.stage(source.id, identifies.slice(i, i + CHUNK), new JobIsolation().context(source.id))
  const profileBytes = async () => {
    const pipeline = probe.pipeline()
    for (const m of identifies) pipeline.call('MEMORY', 'USAGE', app.keys.profile(source.id, m.userId!), 'SAMPLES', '0')
    return (await pipeline.exec())!.reduce((sum, [, bytes]) => sum + Number(bytes), 0)
  }
  const beforeHistory = await profileBytes()
  const tracks: SegmentMessage[] = identifies.map((m) => ({ ...m, type: 'track', event: 'Product Viewed', traits: undefined }))
  for (let i = 0; i < extra; i += CHUNK) await engine.stage(source.id, tracks.slice(i, i + CHUNK), new JobIsolation().context(source.id))
  const historyBytes = await profileBytes() - beforeHistory
  const historySample = extra
  console.log(`Redis per profile: ${typical} bytes with email, phone, a trait and two audience properties (target ≤ 300); ${full} bytes with all ten match keys (target ≤ 600)`)
  console.log(`Redis per (user, tracked event): ${(historyBytes / historySample).toFixed(0)} bytes (one event, one day bucket; target ≤ 100)`)
  console.log(`Redis in all: ${mib(await usedMemory())} for ${USERS.toLocaleString('en')} users and one audience`)
} finally {
  await app.close()
  probe.disconnect()
  await server.stop()
  rmSync(dir, { recursive: true, force: true })
}
