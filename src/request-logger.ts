import type { FastifyBaseLogger, RouteShorthandOptions } from 'fastify'

const LEVELS = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60 } as const
type Level = keyof typeof LEVELS
type Bindings = Record<string, unknown>
type ChildLoggerFactory = NonNullable<RouteShorthandOptions['childLoggerFactory']>

/**
 * A request's logger whose Pino child is made on its first line. Ingestion writes a line only
 * when a request fails with a 5xx, yet Fastify makes a child logger for every request: with our
 * redaction (its wildcard paths take every binding) and a level of the route's own (Pino then
 * builds the child's methods again), that was ~2 KB of garbage a request, more than any other
 * part of a single-message request but the HTTP parser's.
 */
class LazyRequestLogger implements FastifyBaseLogger {
  private child_?: FastifyBaseLogger

  constructor (private readonly parent: FastifyBaseLogger, private readonly bindings: Bindings, readonly level: Level, private readonly threshold: number) {}

  fatal (...args: unknown[]): void { this.write('fatal', args) }
  error (...args: unknown[]): void { this.write('error', args) }
  warn (...args: unknown[]): void { this.write('warn', args) }
  info (...args: unknown[]): void { this.write('info', args) }
  debug (...args: unknown[]): void { this.write('debug', args) }
  trace (...args: unknown[]): void { this.write('trace', args) }
  silent (): void {}

  child (bindings: Bindings, options?: Record<string, unknown>): FastifyBaseLogger {
    return this.logger().child(bindings, options)
  }

  private write (level: Level, args: unknown[]): void {
    if (LEVELS[level] < this.threshold) return
    ;(this.logger()[level] as (...args: unknown[]) => void)(...args)
  }

  private logger (): FastifyBaseLogger {
    return (this.child_ ??= this.parent.child(this.bindings, { level: this.level }))
  }
}

/**
 * A route's `childLoggerFactory`: requests log at `minimum` or above (and at the server's level
 * when that is higher), with the request id, and make no Pino child until they log.
 */
export function lazyRequestLogger (minimum: Level): ChildLoggerFactory {
  return function (logger: FastifyBaseLogger, bindings: Bindings) {
    const serverLevel = LEVELS[logger.level as Level] ?? Infinity // 'silent': nothing is written
    const level = serverLevel > LEVELS[minimum] ? logger.level as Level : minimum
    return new LazyRequestLogger(logger, bindings, level, Math.max(serverLevel, LEVELS[minimum]))
  }
}
