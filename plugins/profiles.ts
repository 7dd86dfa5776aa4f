import fp from 'fastify-plugin'
import type { ChainableCommander, Redis } from 'ioredis'
import { hashedTraitKeys, type MatchKeys } from '../src/facebook/match-keys.js'
import type { RedisKeys } from '../src/keys.js'
import { MATCH_KEY_TRAITS } from '../src/audiences/key.js'

/** Hashed match keys of a profile: each a SHA-256, kept as 32 raw bytes (half the hex). */
const SINGLE_KEYS = ['ge', 'fn', 'ln', 'ct', 'st', 'zp', 'country', 'db', 'doby', 'dobm', 'dobd'] as const
const LIST_KEYS = ['em', 'ph'] as const
const MATCH_KEY_TRAIT_SET: ReadonlySet<string> = new Set(MATCH_KEY_TRAITS)

export interface Profile {
  matchKeys: MatchKeys
  /** Other traits, as sent (never a match-key trait: those are kept only hashed). */
  traits: Record<string, unknown>
  /** Audience and computed-trait memberships: audience key → member. */
  audiences: Record<string, boolean>
}

/** Profile hash fields: `k:<matchKey>` raw hashes, `t:<trait>` JSON, `a:<audienceKey>` '1' | '0'. */
export function profileFields (traits: Record<string, unknown> | undefined): Record<string, string | Buffer> {
  const fields: Record<string, string | Buffer> = {}
  if (traits === undefined) return fields
  const keys = hashedTraitKeys(traits)
  for (const name of LIST_KEYS) {
    const list = keys[name]
    if (list !== undefined && list.length > 0) fields[`k:${name}`] = Buffer.concat(list.map((hex) => Buffer.from(hex, 'hex')))
  }
  for (const name of SINGLE_KEYS) {
    const value = keys[name]
    if (value !== undefined) fields[`k:${name}`] = Buffer.from(value, 'hex')
  }
  for (const [name, value] of Object.entries(traits)) {
    // No raw PII at rest: match-key traits live only as the hashes above.
    if (MATCH_KEY_TRAIT_SET.has(name) || value === undefined) continue
    fields[`t:${name}`] = JSON.stringify(value)
  }
  return fields
}

export function readProfile (raw: Record<string, Buffer> | null | undefined): Profile {
  const profile: Profile = { matchKeys: {}, traits: {}, audiences: {} }
  if (raw === null || raw === undefined) return profile
  for (const [field, value] of Object.entries(raw)) {
    const kind = field.slice(0, 2)
    const name = field.slice(2)
    if (kind === 'k:') {
      const hex = value.toString('hex')
      if (name === 'em' || name === 'ph') {
        const list: string[] = []
        for (let i = 0; i < hex.length; i += 64) list.push(hex.slice(i, i + 64))
        profile.matchKeys[name] = list
      } else {
        (profile.matchKeys as Record<string, string>)[name] = hex
      }
    } else if (kind === 't:') {
      try { profile.traits[name] = JSON.parse(value.toString('utf8')) } catch { /* a corrupt trait is skipped */ }
    } else if (kind === 'a:') {
      profile.audiences[name] = value.toString() === '1'
    }
  }
  return profile
}

/**
 * User profiles per source, keyed by userId (an anonymous user by `anon:<anonymousId>` until an
 * identify links the two). Keys spread by user (`{userId}` hash tag), never under one tag.
 */
export class ProfileStore {
  constructor (private readonly redis: Redis, private readonly keys: RedisKeys, readonly retentionMs: number) {}

  /** The profile id of each message's user: userId, else the user its anonymousId is linked to. */
  async identities (sourceId: string, users: Array<{ userId?: string, anonymousId?: string }>): Promise<Array<string | undefined>> {
    const pending = users.map((u, i) => [u, i] as const).filter(([u]) => u.userId === undefined && u.anonymousId !== undefined)
    const linked = pending.length === 0
      ? []
      : await this.redis.mget(...pending.map(([u]) => this.keys.anonymousLink(sourceId, u.anonymousId!)))
    const result = users.map((u) => u.userId)
    pending.forEach(([u, i], n) => { result[i] = linked[n] ?? `anon:${u.anonymousId}` })
    return result
  }

  /** Queues an identify's profile update on `pipeline`. */
  applyIdentify (pipeline: ChainableCommander, sourceId: string, profileId: string, anonymousId: string | undefined, fields: Record<string, string | Buffer>): void {
    if (Object.keys(fields).length > 0) pipeline.hset(this.keys.profile(sourceId, profileId), fields)
    if (anonymousId !== undefined && !profileId.startsWith('anon:')) {
      pipeline.set(this.keys.anonymousLink(sourceId, anonymousId), profileId, 'PX', this.retentionMs)
    }
  }

  async get (sourceId: string, profileId: string): Promise<Profile> {
    return readProfile(await this.redis.hgetallBuffer(this.keys.profile(sourceId, profileId)))
  }

  async getMany (sourceId: string, profileIds: string[]): Promise<Profile[]> {
    if (profileIds.length === 0) return []
    const pipeline = this.redis.pipeline()
    for (const id of profileIds) pipeline.hgetallBuffer(this.keys.profile(sourceId, id))
    const answers = await pipeline.exec()
    return answers!.map(([err, raw]) => {
      if (err) throw err
      return readProfile(raw as Record<string, Buffer>)
    })
  }
}

declare module 'fastify' {
  interface FastifyInstance {
    profiles: ProfileStore
  }
}

export default fp(async (app) => {
  app.decorate('profiles', new ProfileStore(app.redis, app.keys, app.config.historyRetentionMs))
}, { name: 'profiles', dependencies: ['redis'] })
