import { CURRENT_GRAPH_VERSION, graphVersionStatus, type GraphVersionStatus } from './graph-versions.js'
import { graphVersion, LEGACY_GRAPH_VERSION, type FacebookSettings } from './settings.js'

/** The settings whose maps say which events become conversions. */
const EVENT_MAPS = ['completeRegistrationEvents', 'leadEvents', 'conversionEvents', 'audienceEntryEvents'] as const

/**
 * The destination's Graph version when Meta has retired it and its conversions must be held,
 * else undefined. Never for the legacy format: it always sends to v16.0 by design (a closed API,
 * said in a warning), and holding it would change nothing Meta answers.
 */
export function expiredGraphVersion (settings: FacebookSettings, now: number, apiFormat = settings.apiFormat): GraphVersionStatus | undefined {
  if (apiFormat !== 'conversions-api') return undefined
  const status = graphVersionStatus(settings.apiVersion, now)
  return status.expired ? status : undefined
}

function day (status: GraphVersionStatus): string {
  return status.expiry!.expiresAt.toISODate()!
}

/** What an expired or expiring version means for the destination, in one sentence. */
export function graphVersionWarning (status: GraphVersionStatus): string | undefined {
  if (!status.warn) return undefined
  const { version } = status
  const exact = status.expiry!.exact
  // A version missing from the table goes no later than the next newer one that is in it.
  const known = exact ? '' : ` (${status.expiry!.basedOn}'s date: Meta retires versions in order)`
  if (status.expired) {
    return `Graph API ${version} expired ${exact ? 'on' : 'on or before'} ${day(status)}${known}: conversions are held — and dead-lettered after HOLD_MAX — until settings.apiVersion is changed to a current version such as ${CURRENT_GRAPH_VERSION}.`
  }
  const days = status.daysLeft === 1 ? '1 day' : `${status.daysLeft} days`
  return `Graph API ${version} expires ${exact ? 'on' : 'on or before'} ${day(status)} (in ${days})${known}: change settings.apiVersion to ${CURRENT_GRAPH_VERSION} before then, or conversions will be held from that day.`
}

/**
 * The warning about the Graph version the destination's requests go to: expired or expiring
 * soon — or, for the legacy format, that Meta closed that API.
 */
export function destinationVersionWarning (settings: FacebookSettings, now: number): string | undefined {
  if (settings.apiFormat === 'offline-conversions') {
    const legacy = graphVersionStatus(graphVersion(settings), now)
    return `apiFormat "offline-conversions" is Meta's legacy offline conversions API, which Meta has closed: its requests go to Graph ${LEGACY_GRAPH_VERSION}` +
      `${legacy.expired ? ` (retired on ${day(legacy)})` : ''} and are refused. Use "conversions-api".`
  }
  return graphVersionWarning(graphVersionStatus(settings.apiVersion, now))
}

/**
 * Warnings about settings that are accepted but will not do what their owner expects, as
 * sentences (the admin API's `warnings`; empty when all is well).
 */
export function settingsWarnings (settings: FacebookSettings, now: number): string[] {
  const warnings: string[] = []
  // (`?? {}`: settings stored by a build that did not have every map yet)
  if (EVENT_MAPS.every((map) => Object.keys(settings[map] ?? {}).length === 0)) {
    warnings.push('No event is mapped: completeRegistrationEvents, leadEvents, conversionEvents and audienceEntryEvents are all empty, so every event is filtered and nothing is sent to Meta.')
  }
  const version = destinationVersionWarning(settings, now)
  if (version !== undefined) warnings.push(version)
  return warnings
}
