import { Redis } from 'ioredis'

/** What the service needs to know of its Redis; a setting left undefined could not be read. */
export interface RedisSettings {
  maxmemoryPolicy?: string
  appendonly?: boolean
  appendfsync?: string
  /** Why settings could not be read: Redis unreachable, INFO or CONFIG GET refused. */
  unread: string[]
}

/** `INFO <section>` as a map of its `name:value` lines. */
function parseInfo (text: string): Map<string, string> {
  const fields = new Map<string, string>()
  for (const line of text.split('\r\n')) {
    const colon = line.indexOf(':')
    if (colon > 0 && !line.startsWith('#')) fields.set(line.slice(0, colon), line.slice(colon + 1))
  }
  return fields
}

function reason (err: unknown): string {
  return (err as Error).message.split('\n')[0]
}

/**
 * Reads the settings that decide whether accepted messages survive: the eviction policy and the
 * AOF. Both from INFO (`maxmemory_policy`, `aof_enabled`), which managed services allow where
 * they refuse CONFIG GET; `appendfsync` is only in CONFIG GET, and stays unknown when refused.
 * Never throws: what it cannot read is listed in `unread`.
 */
export async function readRedisSettings (url: string, timeoutMs = 3000): Promise<RedisSettings> {
  const redis = new Redis(url, {
    lazyConnect: true,
    connectTimeout: timeoutMs,
    commandTimeout: timeoutMs,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    // Its INFO would fail the connection where INFO is refused; ours says which setting it missed.
    enableReadyCheck: false
  })
  redis.on('error', () => {})
  const settings: RedisSettings = { unread: [] }
  try {
    await redis.connect()
  } catch (err) {
    settings.unread.push(`Redis is unreachable (${reason(err)})`)
    redis.disconnect()
    return settings
  }
  try {
    try {
      const policy = parseInfo(await redis.info('memory')).get('maxmemory_policy')
      if (policy === undefined) settings.unread.push('maxmemory-policy (not in INFO memory)')
      else settings.maxmemoryPolicy = policy
    } catch (err) {
      settings.unread.push(`maxmemory-policy (INFO memory: ${reason(err)})`)
    }
    try {
      const aof = parseInfo(await redis.info('persistence')).get('aof_enabled')
      if (aof === undefined) settings.unread.push('appendonly (not in INFO persistence)')
      else settings.appendonly = aof === '1'
    } catch (err) {
      settings.unread.push(`appendonly (INFO persistence: ${reason(err)})`)
    }
    try {
      const [, value] = await redis.config('GET', 'appendfsync') as string[]
      if (value === undefined) settings.unread.push('appendfsync (CONFIG GET answered nothing)')
      else settings.appendfsync = value
    } catch (err) {
      settings.unread.push(`appendfsync (CONFIG GET: ${reason(err)})`)
    }
  } finally {
    await redis.quit().catch(() => redis.disconnect())
  }
  return settings
}

export interface RedisVerdict {
  /** Set when the service must not start on this Redis: what is wrong and what to do. */
  refusal?: string
  warnings: string[]
}

/** Whether this Redis keeps what the service accepts (DESIGN.md: `noeviction`, AOF `everysec`). */
export function judgeRedisSettings (settings: RedisSettings, allowEviction: boolean): RedisVerdict {
  const warnings: string[] = []
  let refusal: string | undefined
  const policy = settings.maxmemoryPolicy
  if (policy !== undefined && policy !== 'noeviction') {
    const risk = `Redis's maxmemory-policy is "${policy}": when Redis reaches its maxmemory it evicts keys, and BullMQ loses jobs — accepted messages — with them.`
    if (allowEviction) warnings.push(`${risk} Starting anyway because REDIS_ALLOW_EVICTION=true.`)
    else refusal = `${risk} Set "maxmemory-policy noeviction" on that Redis (CONFIG SET maxmemory-policy noeviction, and in redis.conf or your provider's parameters), or set REDIS_ALLOW_EVICTION=true to start anyway.`
  }
  if (settings.appendonly === false) {
    warnings.push('Redis runs without its AOF (appendonly no): a restart or crash of Redis loses every accepted message not yet delivered, and the sources, destinations and audiences. Set "appendonly yes" and "appendfsync everysec".')
  } else if (settings.appendonly === true && settings.appendfsync === 'no') {
    warnings.push('Redis\'s appendfsync is "no": the operating system decides when the AOF reaches the disk, and a crash of the machine can lose some 30 s of accepted messages. Set "appendfsync everysec".')
  }
  if (settings.unread.length > 0) {
    warnings.push(`Could not read Redis's settings, so they are not checked: ${settings.unread.join('; ')}. Make sure that Redis runs with maxmemory-policy noeviction and appendonly yes (appendfsync everysec).`)
  }
  return { refusal, warnings }
}

/** The URL as it may be logged: no password, no query (ioredis takes options, a password too, from it). */
export function redisUrlForLog (url: string): string {
  try {
    const parsed = new URL(url)
    const user = parsed.username === '' ? '' : `${parsed.username}@`
    return `${parsed.protocol}//${user}${parsed.host}${parsed.pathname === '/' ? '' : parsed.pathname}`
  } catch {
    return '(unparsable REDIS_URL)'
  }
}
