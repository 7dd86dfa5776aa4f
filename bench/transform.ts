// Throughput of the pure transform (match keys, hashing, both checks, payload), one core.
// Run: npx tsx bench/transform.ts [messages]   (target: ≥ 100,000 events/s per core)
//   or: node --expose-gc --import tsx bench/transform.ts   (also measures the memo's footprint)
//
// Seed-like traffic: a pool of returning users (some very active, most occasional) whose
// hashes the memo keeps, plus one-off customers with new emails and phones that always miss it.
import { clearMatchKeyCache, hashedTraitKeys, type MatchKeys } from '../src/facebook/match-keys.js'
import { parseFacebookSettings, type FacebookSettings } from '../src/facebook/settings.js'
import { transformTrack } from '../src/facebook/transform.js'
import type { SegmentMessage } from '../src/segment/types.js'

const MESSAGES = Number(process.argv[2] ?? 200_000)
const RETURNING_USERS = 20_000
const ONE_OFF_SHARE = 0.25
const WARM_UP = 20_000
const RUNS = 5

// a small deterministic PRNG (mulberry32): the same traffic on every run
let seed = 0x5eed
function random (): number {
  seed = (seed + 0x6d2b79f5) | 0
  let x = Math.imul(seed ^ (seed >>> 15), 1 | seed)
  x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x
  return ((x ^ (x >>> 14)) >>> 0) / 4294967296
}
function pick<T> (list: readonly T[]): T {
  return list[Math.floor(random() * list.length)]
}
function id (): string {
  return Math.floor(random() * 2 ** 52).toString(36)
}

const FIRST = ['ham', 'mary', 'john', 'léa', 'noah', 'olivia', 'liam', 'emma', 'ava', 'lucas', 'mia', 'sofia', 'jean-paul', "o'neil"]
const LAST = ['solo', 'smith', 'johnson', 'garcía', 'brown', 'miller', 'davis', 'martin', 'nguyen', 'müller', 'kim', 'van dyke']
const PLACES = [
  { city: 'East Greenwich', state: 'RI', postalCode: '02818', country: 'USA' },
  { city: 'New York', state: 'New York', postalCode: '10001-1234', country: 'United States' },
  { city: 'San Francisco', state: 'CA', postalCode: '94107', country: 'US' },
  { city: 'Austin', state: 'Texas', postalCode: '73301', country: 'us' },
  { city: 'London', state: 'Greater London', postalCode: 'M1 1AE', country: 'United Kingdom' },
  { city: 'Paris', state: 'Île-de-France', postalCode: '75008', country: 'FR' },
  { city: 'São Paulo', state: 'SP', postalCode: '01310-100', country: 'Brazil' }
]
const EVENTS: ReadonlyArray<readonly [string, number]> = [
  ['Product Viewed', 30], ['Product Added', 18], ['Product List Viewed', 8], ['Checkout Started', 8],
  ['Order Completed', 12], ['Signed Up', 4], ['Lead Generated', 3], ['Membership Upgraded', 3],
  ['Page Scrolled', 14] // in no map: filtered
]
const EVENT_BAG = EVENTS.flatMap(([event, weight]) => Array<string>(weight).fill(event))

interface User { userId: string, traits: Record<string, unknown>, profileKeys: MatchKeys }

function makeUser (n: number): User {
  const first = pick(FIRST)
  const last = pick(LAST)
  const traits: Record<string, unknown> = {
    email: `${first.replace(/\W/g, '')}.${last.replace(/\W/g, '')}${n}@example.com`,
    phone: `401${String(1_000_000 + Math.floor(random() * 8_999_999)).slice(0, 7)}`,
    name: `${first} ${last}`,
    gender: pick(['m', 'f', 'male', 'Female', undefined]),
    address: pick(PLACES)
  }
  if (random() < 0.3) traits.birthday = `19${50 + Math.floor(random() * 50)}-0${1 + Math.floor(random() * 9)}-1${Math.floor(random() * 9)}`
  return { userId: `user-${n}-${id()}`, traits, profileKeys: {} }
}

function properties (event: string): Record<string, unknown> {
  const products = Array.from({ length: 1 + Math.floor(random() * 4) }, () => ({
    product_id: `p-${Math.floor(random() * 5000)}`, sku: `SKU-${Math.floor(random() * 900)}`, price: Math.round(random() * 10000) / 100, quantity: 1
  }))
  switch (event) {
    case 'Order Completed':
      return { order_id: id(), revenue: Math.round(random() * 50000) / 100, currency: pick(['USD', 'usd', 'EUR', undefined]), products, shippingMethod: '2-day', coupon: 'MAYDEALS' }
    case 'Product List Viewed':
      return { list_id: id(), category: pick(['Games', 'Toys', 'Books']), products }
    case 'Checkout Started':
      return { order_id: id(), value: String(Math.round(random() * 50000) / 100), products }
    case 'Product Viewed':
    case 'Product Added':
      return { product_id: products[0].product_id, sku: products[0].sku, category: 'Games', name: 'Monopoly: 3rd Edition', brand: 'Hasbro', price: products[0].price, value: products[0].price, quantity: 1, position: 3 }
    default:
      return { plan: 'gold', source: 'store' }
  }
}

const settingsResult = parseFacebookSettings({
  completeRegistrationEvents: { 'Signed Up': '1104832229607827' },
  leadEvents: { 'Lead Generated': '5504831519607222' },
  conversionEvents: Object.fromEntries(EVENTS.filter(([event]) => event !== 'Page Scrolled' && event !== 'Signed Up' && event !== 'Lead Generated')
    .map(([event]) => [event, '794041057373779'])),
  limitedDataUse: true
})
if ('error' in settingsResult) throw new Error(settingsResult.error)
const settings: FacebookSettings = settingsResult.settings

const now = Date.now()
const returning = Array.from({ length: RETURNING_USERS }, (_, n) => makeUser(n))
for (const user of returning) user.profileKeys = hashedTraitKeys(user.traits) // as the profile store keeps them
clearMatchKeyCache()

interface Input { message: SegmentMessage, profileKeys?: MatchKeys }

function makeInputs (count: number, oneOffShare: number, offset: number): Input[] {
  return Array.from({ length: count }, (_, n) => {
    const oneOff = random() < oneOffShare
    // returning users: a skewed pick, a few users are very active
    const user = oneOff ? makeUser(1_000_000 + offset + n) : returning[Math.floor(RETURNING_USERS * random() ** 2)]
    const event = pick(EVENT_BAG)
    const timestamp = new Date(now - Math.floor(random() * 3 * 24 * 3600 * 1000)).toISOString()
    const message: SegmentMessage = {
      type: 'track',
      messageId: `${id()}-${n}`,
      userId: user.userId,
      event,
      properties: properties(event),
      // most tracks carry traits; the others rely on the stored profile
      context: random() < 0.7 ? { traits: user.traits, library: { name: 'analytics-node', version: '3.1.0' } } : { library: { name: 'analytics-node', version: '3.1.0' } },
      timestamp,
      originalTimestamp: timestamp,
      receivedAt: timestamp
    }
    if (random() < 0.2) message.integrations = { 'Facebook Offline Conversions': { dataProcessingOptions: [['LDU'], 1, 1000] } }
    return { message, profileKeys: oneOff ? undefined : user.profileKeys }
  }).map((input) => JSON.parse(JSON.stringify(input)) as Input) // as a worker gets them: every string its own copy
}

// Rates are per CPU-second of this process (user + system): events/s per core, and steady when
// other processes share the machine. Wall-clock time is reported next to it.
function run (inputs: Input[]): { seconds: number, cpuSeconds: number, conversions: number, invalid: number, filtered: number } {
  let conversions = 0
  let invalid = 0
  let filtered = 0
  const started = process.hrtime.bigint()
  const cpuStarted = process.cpuUsage()
  for (const { message, profileKeys } of inputs) {
    const results = transformTrack(message, settings, { now, profileKeys })
    if (results.length === 0) filtered++
    for (const result of results) {
      if (result.kind === 'conversion') conversions++
      else invalid++
    }
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9
  const cpu = process.cpuUsage(cpuStarted)
  return { seconds, cpuSeconds: (cpu.user + cpu.system) / 1e6, conversions, invalid, filtered }
}

function median (values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)]
}

const format = (n: number) => Math.round(n).toLocaleString('en-US')

const gc = (globalThis as { gc?: () => void }).gc
const megabytes = (bytes: number) => `${(bytes / 1e6).toFixed(1)} MB`

const warmUp = makeInputs(WARM_UP, ONE_OFF_SHARE, 0)
let mixed: Input[] | undefined = makeInputs(MESSAGES, ONE_OFF_SHARE, WARM_UP)

run(warmUp) // JIT and memo warm-up
const rates: number[] = []
const wallRates: number[] = []
let last = run(mixed)
for (let i = 0; i < RUNS; i++) {
  // each run starts from the memo a live worker would have: warm with the returning users only
  clearMatchKeyCache()
  run(warmUp)
  last = run(mixed)
  rates.push(MESSAGES / last.cpuSeconds)
  wallRates.push(MESSAGES / last.seconds)
}
const heapWithTraffic = process.memoryUsage().heapUsed
mixed = undefined
gc?.()
const heapWithMemo = process.memoryUsage().heapUsed
clearMatchKeyCache()
gc?.()
const heapWithoutMemo = process.memoryUsage().heapUsed

const distinct = makeInputs(MESSAGES, 1, WARM_UP + MESSAGES)
const worst = run(distinct)

console.log(`transform bench: ${format(MESSAGES)} track messages, ${format(RETURNING_USERS)} returning users, ${ONE_OFF_SHARE * 100}% one-off customers`)
console.log(`  per run: ${format(last.conversions)} conversions, ${format(last.invalid)} invalid, ${format(last.filtered)} filtered`)
console.log(`  mixed traffic:        ${format(median(rates))} events/s per core (median of ${RUNS} runs; min ${format(Math.min(...rates))}, max ${format(Math.max(...rates))}; wall clock ${format(median(wallRates))}/s)`)
console.log(`  every user new (memo never hits): ${format(MESSAGES / worst.cpuSeconds)} events/s per core (wall clock ${format(MESSAGES / worst.seconds)}/s)`)
console.log(`  heap used: ${megabytes(heapWithTraffic)} with the ${format(MESSAGES + WARM_UP)} generated messages in memory`)
if (gc !== undefined) {
  console.log(`  match-key memo when full: ~${megabytes(heapWithMemo - heapWithoutMemo)} (heap ${megabytes(heapWithMemo)} with it, ${megabytes(heapWithoutMemo)} without)`)
} else {
  console.log('  (run with `node --expose-gc --import tsx bench/transform.ts` to measure the memo\'s footprint)')
}
