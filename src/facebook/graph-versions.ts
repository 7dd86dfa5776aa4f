import { DateTime, Duration } from 'luxon'

interface GraphVersionEntry {
  version: string
  /** ISO date (UTC) of the release, where known. */
  released?: string
  /** ISO date (UTC) from which Meta no longer answers the version; absent while Meta has set none. */
  expires?: string
}

/**
 * Meta's Graph API versions and their expiry dates, newest first: the one place they are kept
 * (Meta's "Versions" changelog as of late 2026; shared/reference/meta-graph-api-notes.md §3.1).
 * Add a row when Meta releases a version or sets a date.
 */
export const GRAPH_VERSIONS: readonly GraphVersionEntry[] = [
  { version: 'v26.0', released: '2026-07-29' },
  { version: 'v25.0', released: '2026-02-18', expires: '2028-07-29' },
  { version: 'v24.0', released: '2025-10-08', expires: '2028-02-18' },
  { version: 'v23.0', released: '2025-05-29', expires: '2027-10-08' },
  { version: 'v22.0', released: '2025-01-21', expires: '2027-05-20' },
  { version: 'v21.0', released: '2024-10-02', expires: '2027-01-21' },
  { version: 'v20.0', expires: '2026-09-24' },
  { version: 'v17.0', released: '2023-05-23', expires: '2025-09-12' },
  { version: 'v16.0', released: '2023-02-02', expires: '2025-05-14' }
]

/** The newest version: what new destinations use. */
export const CURRENT_GRAPH_VERSION = GRAPH_VERSIONS[0].version

/** How long before a version's expiry it is warned about. */
export const EXPIRY_WARNING = Duration.fromObject({ days: 90 })

const VERSION = /^v(\d+)\.(\d+)$/

function parse (version: string): [number, number] | undefined {
  const match = VERSION.exec(version)
  return match === null ? undefined : [Number(match[1]), Number(match[2])]
}

function compare (a: [number, number], b: [number, number]): number {
  return a[0] - b[0] || a[1] - b[1]
}

export interface GraphVersionExpiry {
  /**
   * When the version stops being answered: the start (UTC) of Meta's expiry date — Meta retires
   * a version on that day, so conversions are held from then rather than sent to be refused.
   */
  expiresAt: DateTime
  /**
   * `false` for a version missing from the table: Meta retires versions in order, so it expires
   * no later than the next newer version that is in it (`basedOn`).
   */
  exact: boolean
  /** The version of the table whose date this is. */
  basedOn: string
}

/**
 * When Meta retires `version`, or undefined when it has no date: Meta set none yet, the version
 * is newer than every one in the table, or it is not a version (`v<major>.<minor>`).
 */
export function graphVersionExpiry (version: string): GraphVersionExpiry | undefined {
  const wanted = parse(version)
  if (wanted === undefined) return undefined
  // The oldest version of the table that is not older than the one asked about (newest first).
  let next: GraphVersionEntry | undefined
  for (const entry of GRAPH_VERSIONS) {
    if (compare(parse(entry.version)!, wanted) < 0) break
    next = entry
  }
  if (next?.expires === undefined) return undefined
  return {
    expiresAt: DateTime.fromISO(next.expires, { zone: 'utc' }),
    exact: next.version === version,
    basedOn: next.version
  }
}

export interface GraphVersionStatus {
  version: string
  /** Absent when the version has no expiry date. */
  expiry?: GraphVersionExpiry
  /** Whole days left before the expiry (rounded down), negative once expired; absent without an expiry date. */
  daysLeft?: number
  expired: boolean
  /** Expired, or expires within EXPIRY_WARNING: worth a warning. */
  warn: boolean
}

/** Where `version` stands at `now` (ms, the app's clock). */
export function graphVersionStatus (version: string, now: number): GraphVersionStatus {
  const expiry = graphVersionExpiry(version)
  if (expiry === undefined) return { version, expired: false, warn: false }
  const left = expiry.expiresAt.diff(DateTime.fromMillis(now, { zone: 'utc' }))
  const expired = left.toMillis() <= 0
  return {
    version,
    expiry,
    daysLeft: Math.floor(left.as('days')),
    expired,
    warn: expired || left.toMillis() < EXPIRY_WARNING.toMillis()
  }
}
