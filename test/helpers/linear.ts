/**
 * How a function's time grows with its input: its time on a 100 KB input over its time on a
 * 10 KB one. Linear code gives about 10; a quadratic step about 100. A ratio, not a wall-clock
 * bound: it holds on a slow machine as on a fast one.
 *
 * Both sizes are timed in CPU time with the same number of calls (enough for a batch of the small
 * one to take 1 ms, so the clock's resolution does not decide), in nine alternating repetitions,
 * and the medians compared. A linear function still measures 10–20× at times (100 KB
 * leaves the CPU's caches where 10 KB does not; another process takes the core mid-run), so up to
 * three tries are made and the best counts: a quadratic one measures ~100× every time.
 */
export function growthRatio<T> (fn: (input: T) => unknown, small: T, large: T, maxRatio = 20): number {
  let best = Infinity
  for (let attempt = 0; attempt < 3 && best > maxRatio; attempt++) best = Math.min(best, medianRatio(fn, small, large))
  return best
}

const REPETITIONS = 9
// CPU time in µs (process.cpuUsage): the time another process has the core is not counted.
const MIN_BATCH_US = 1000

function medianRatio<T> (fn: (input: T) => unknown, small: T, large: T): number {
  let count = 1
  fn(small) // warm up (and fill any one-time index)
  fn(large)
  while (timeBatch(fn, small, count) < MIN_BATCH_US && count < 1_000_000) count *= 2
  // One untimed batch of each first: the compiler has seen both sizes before the clock starts.
  timeBatch(fn, small, count)
  timeBatch(fn, large, count)
  const smallTimes: number[] = []
  const largeTimes: number[] = []
  for (let i = 0; i < REPETITIONS; i++) {
    smallTimes.push(timeBatch(fn, small, count))
    largeTimes.push(timeBatch(fn, large, count))
  }
  return median(largeTimes) / Math.max(1, median(smallTimes))
}

/** The CPU time, in µs, of `count` calls. */
function timeBatch<T> (fn: (input: T) => unknown, input: T, count: number): number {
  const started = process.cpuUsage()
  for (let i = 0; i < count; i++) fn(input)
  const spent = process.cpuUsage(started)
  return spent.user + spent.system
}

function median (values: number[]): number {
  return [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]
}

/** The growth of `fn` from 10 KB to 100 KB of the input `make` builds (outside the timed calls). */
export function growth<T> (fn: (input: T) => unknown, make: (bytes: number) => T, maxRatio = 20): number {
  return growthRatio(fn, make(10 * 1024), make(100 * 1024), maxRatio)
}

/** `unit` repeated to `bytes` characters, then `tail`: the shape that makes a backtracking pattern retry. */
export function repeated (unit: string, tail = ''): (bytes: number) => string {
  return (bytes) => unit.repeat(Math.ceil(bytes / unit.length)).slice(0, bytes) + tail
}
