import t from 'tap'
import { expiredGraphVersion, settingsWarnings } from '../../src/facebook/destination-checks.js'
import { CURRENT_GRAPH_VERSION, EXPIRY_WARNING, GRAPH_VERSIONS, graphVersionExpiry, graphVersionStatus } from '../../src/facebook/graph-versions.js'
import { parseFacebookSettings, type FacebookSettings } from '../../src/facebook/settings.js'

const at = (iso: string) => Date.parse(iso)
// The day this was written: v21.0 has 48 calendar days left, so it is within the 90-day warning.
const TODAY = at('2026-12-04T12:00:00Z')

function settings (input: Record<string, unknown>): FacebookSettings {
  const result = parseFacebookSettings(input)
  if ('error' in result) throw new Error(result.error)
  return result.settings
}

t.test('the table: newest first, v26.0 current without an expiry, the dates of Meta\'s changelog', async (t) => {
  t.equal(CURRENT_GRAPH_VERSION, 'v26.0')
  t.equal(EXPIRY_WARNING.as('days'), 90)
  t.equal(graphVersionExpiry('v26.0'), undefined, 'Meta has set no date for v26.0 yet')
  const dates: Record<string, string> = {
    'v25.0': '2028-07-29',
    'v24.0': '2028-02-18',
    'v23.0': '2027-10-08',
    'v22.0': '2027-05-20',
    'v21.0': '2027-01-21',
    'v20.0': '2026-09-24',
    'v17.0': '2025-09-12',
    'v16.0': '2025-05-14'
  }
  for (const [version, date] of Object.entries(dates)) {
    const expiry = graphVersionExpiry(version)
    t.equal(expiry?.expiresAt.toISO(), `${date}T00:00:00.000Z`, `${version} goes at the start (UTC) of ${date}`)
    t.equal(expiry?.exact, true, `${version} is in the table`)
  }
  const expiries = GRAPH_VERSIONS.flatMap((v) => v.expires === undefined ? [] : [v.expires])
  t.same(expiries, [...expiries].sort().reverse(), 'Meta retires versions in order: newer ones go later')
})

t.test('expired, within 90 days, and far off', async (t) => {
  t.match(graphVersionStatus('v21.0', TODAY), { expired: false, warn: true, daysLeft: 47 }, 'v21.0 on 2026-12-04 (noon): 47 whole days, warned')
  t.match(graphVersionStatus('v21.0', at('2027-01-20T23:59:59Z')), { expired: false, warn: true, daysLeft: 0 }, 'still usable the evening before')
  t.match(graphVersionStatus('v21.0', at('2027-01-21T00:00:00Z')), { expired: true, warn: true, daysLeft: 0 }, 'retired on its date')
  t.match(graphVersionStatus('v21.0', at('2027-01-22T12:00:00Z')), { expired: true, warn: true, daysLeft: -2 }, 'negative once expired')
  t.match(graphVersionStatus('v20.0', TODAY), { expired: true, warn: true, daysLeft: -72 }, 'v20.0 expired on 2026-09-24')
  t.match(graphVersionStatus('v16.0', TODAY), { expired: true, warn: true })

  t.match(graphVersionStatus('v22.0', TODAY), { expired: false, warn: false, daysLeft: 166 }, 'v22.0 (2027-05-20) is not warned about yet')
  t.match(graphVersionStatus('v22.0', at('2027-02-19T12:00:00Z')), { expired: false, warn: true, daysLeft: 89 }, '…until 90 days before')
  t.match(graphVersionStatus('v22.0', at('2027-02-19T00:00:00Z')), { expired: false, warn: false, daysLeft: 90 }, 'exactly 90 days before: not yet')

  const current = graphVersionStatus('v26.0', at('2040-01-01T00:00:00Z'))
  t.same(current, { version: 'v26.0', expired: false, warn: false }, 'no date: never expired, no days left')
})

t.test('versions missing from the table', async (t) => {
  // Meta retires versions in order: older than a known one, it goes no later than that one.
  for (const version of ['v19.0', 'v18.0']) {
    const expiry = graphVersionExpiry(version)
    t.match(expiry, { exact: false, basedOn: 'v20.0' }, `${version} goes no later than v20.0`)
    t.ok(graphVersionStatus(version, TODAY).expired, `${version} has expired`)
  }
  t.match(graphVersionExpiry('v2.0'), { exact: false, basedOn: 'v16.0' }, 'older than the oldest in the table: by v16.0\'s date')
  t.ok(graphVersionStatus('v12.0', TODAY).expired)
  t.match(graphVersionExpiry('v21.5'), { exact: false, basedOn: 'v22.0' }, 'between two known versions: by the newer one\'s date')
  t.match(graphVersionStatus('v21.5', TODAY), { expired: false, warn: false })
  t.match(graphVersionExpiry('v17.1'), { basedOn: 'v20.0' })

  t.equal(graphVersionExpiry('v27.0'), undefined, 'newer than the newest known: not expiring')
  t.equal(graphVersionExpiry('v100.0'), undefined)
  t.equal(graphVersionExpiry('v25.5'), undefined, 'just older than v26.0, which has no date: none either')
  t.equal(graphVersionExpiry('21.0'), undefined, 'not a version')
  t.same(graphVersionStatus('latest', TODAY), { version: 'latest', expired: false, warn: false })
})

t.test('a destination\'s version: held when expired (never for the legacy format), and its warnings', async (t) => {
  t.equal(expiredGraphVersion(settings({ apiVersion: 'v21.0' }), TODAY), undefined, 'not yet')
  t.match(expiredGraphVersion(settings({ apiVersion: 'v21.0' }), at('2027-01-22T00:00:00Z')), { version: 'v21.0', expired: true })
  t.equal(expiredGraphVersion(settings({ apiFormat: 'offline-conversions', apiVersion: 'v20.0' }), TODAY), undefined,
    'the legacy format goes to v16.0 by design: not held')
  t.match(expiredGraphVersion(settings({ apiFormat: 'offline-conversions', apiVersion: 'v20.0' }), TODAY, 'conversions-api'), { version: 'v20.0' },
    'conversions-api payloads of a destination now on the legacy format follow apiVersion')

  const mapped = { conversionEvents: { 'Order Completed': '1' } }
  t.same(settingsWarnings(settings(mapped), TODAY), [], 'v26.0 and a map: nothing to say')
  t.same(settingsWarnings(settings({ ...mapped, apiVersion: 'v22.0' }), TODAY), [])

  const [expiring] = settingsWarnings(settings({ ...mapped, apiVersion: 'v21.0' }), TODAY)
  t.equal(expiring, 'Graph API v21.0 expires on 2027-01-21 (in 47 days): change settings.apiVersion to v26.0 before then, or conversions will be held from that day.')
  t.match(settingsWarnings(settings({ ...mapped, apiVersion: 'v21.0' }), at('2027-01-19T12:00:00Z'))[0], /\(in 1 day\)/)
  const [expired] = settingsWarnings(settings({ ...mapped, apiVersion: 'v20.0' }), TODAY)
  t.match(expired, /^Graph API v20\.0 expired on 2026-09-24: conversions are held .* until settings\.apiVersion is changed to a current version such as v26\.0\.$/)
  const [unknown] = settingsWarnings(settings({ ...mapped, apiVersion: 'v19.0' }), TODAY)
  t.match(unknown, /^Graph API v19\.0 expired on or before 2026-09-24 \(v20\.0's date: Meta retires versions in order\)/)

  t.match(settingsWarnings(settings({ ...mapped, apiVersion: 'v21.5' }), at('2027-03-01T00:00:00Z'))[0],
    /^Graph API v21\.5 expires on or before 2027-05-20 \(in 80 days\) \(v22\.0's date/)

  const legacy = settingsWarnings(settings({ ...mapped, apiFormat: 'offline-conversions' }), TODAY)
  t.equal(legacy.length, 1)
  t.match(legacy[0], /legacy offline conversions API, which Meta has closed: its requests go to Graph v16\.0 \(retired on 2025-05-14\)/)

  t.notMatch(settingsWarnings(settings({ ...mapped, apiFormat: 'offline-conversions' }), at('2025-01-01T00:00:00Z'))[0], /retired/,
    'before v16.0\'s date the legacy API was closed all the same, but not yet retired')

  const empty = settingsWarnings(settings({}), TODAY)
  t.same(empty, ['No event is mapped: completeRegistrationEvents, leadEvents, conversionEvents and audienceEntryEvents are all empty, so every event is filtered and nothing is sent to Meta.'])
  t.equal(settingsWarnings(settings({ audienceEntryEvents: { vip: '1' } }), TODAY).length, 0, 'an audience map alone is a mapping')
  t.equal(settingsWarnings(settings({ apiVersion: 'v21.0' }), TODAY).length, 2, 'both at once')
})
