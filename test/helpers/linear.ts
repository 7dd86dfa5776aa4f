/**
 * How a function's time grows with its input: the median time per call on an input of 10 KB
 * and of 100 KB (each measured over enough calls to take a few milliseconds), and their ratio.
 * Linear code gives about 10; a quadratic regular expression about 100. A ratio, not a
 * wall-clock bound: it holds on a slow machine as on a fast one.
 */
export function growth<T> (fn: (input: T) => unknown, make: (bytes: number) => T, maxRatio = 20): { small: number, large: number, ratio: number } {
  const smallInput = make(10 * 1024)
  const largeInput = make(100 * 1024)
  // Warm up on both: the first calls compile, and a cold small run looks fast against a warm large one.
  for (let i = 0; i < 3; i++) { fn(smallInput); fn(largeInput) }
  // A linear function measures 10–20× (100 KB leaves the CPU's caches where 10 KB does not, and
  // another process may take the core mid-run): up to three tries, the best counts. A quadratic
  // one measures ~100× every time.
  let best = { small: 0, large: 0, ratio: Infinity }
  for (let attempt = 0; attempt < 3 && best.ratio > maxRatio; attempt++) {
    const small = medianTime(fn, smallInput)
    const large = medianTime(fn, largeInput)
    // A floor of 50 ns keeps a constant-time function (a bounded input) from dividing noise by noise.
    const ratio = Math.max(large, 50e-9) / Math.max(small, 50e-9)
    if (ratio < best.ratio) best = { small, large, ratio }
  }
  return best
}

function medianTime<T> (fn: (input: T) => unknown, input: T): number {
  const times: number[] = []
  for (let round = 0; round < 5; round++) {
    let calls = 0
    const start = process.hrtime.bigint()
    let elapsed = 0n
    do {
      fn(input)
      calls++
      elapsed = process.hrtime.bigint() - start
    } while (elapsed < 3_000_000n)
    times.push(Number(elapsed) / 1e9 / calls)
  }
  return times.sort((a, b) => a - b)[2]
}

/** `unit` repeated to `bytes` characters, then `tail`: the shape that makes a backtracking pattern retry. */
export function repeated (unit: string, tail = ''): (bytes: number) => string {
  return (bytes) => unit.repeat(Math.ceil(bytes / unit.length)).slice(0, bytes) + tail
}
