/**
 * Where each message of a batch body's `batch` array is in the text, as `[start, end)` — the
 * message as the client sent it, whitespace included: what the 32 KB limit measures — without
 * serialising the parsed messages again. `text` must be JSON that has parsed. Answers `undefined` when the
 * body does not have the plain shape (no `batch` key spelt as such, or the array not found):
 * the caller then measures otherwise.
 */
export function batchItemSpans (text: string): Array<[number, number]> | undefined {
  let spans: Array<[number, number]> | undefined
  let depth = 0
  let key = ''
  let inBatch = false
  let itemStart = -1
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c === QUOTE) {
      // Jump to the closing quote: one preceded by an even number of backslashes.
      const start = i
      for (;;) {
        i = text.indexOf('"', i + 1)
        if (i < 0) return undefined
        let backslash = i - 1
        while (text.charCodeAt(backslash) === BACKSLASH) backslash--
        if ((i - 1 - backslash) % 2 === 0) break
      }
      if (depth === 1) key = text.slice(start + 1, i)
      else if (inBatch && depth === 2) spans!.push([start, i + 1]) // a string item: rejected later
      continue
    }
    if (c === OPEN_BRACE || c === OPEN_BRACKET) {
      // JSON.parse keeps the last of repeated keys: so does this.
      if (depth === 1 && c === OPEN_BRACKET && key === 'batch') {
        inBatch = true
        spans = []
      } else if (inBatch && depth === 2) {
        itemStart = i
      }
      depth++
    } else if (c === CLOSE_BRACE || c === CLOSE_BRACKET) {
      depth--
      if (inBatch && depth === 2 && itemStart >= 0) {
        spans!.push([itemStart, i + 1])
        itemStart = -1
      } else if (inBatch && depth === 1) {
        inBatch = false
      }
    } else if (inBatch && depth === 2 && itemStart < 0 && c > SPACE && c !== COMMA) {
      // A number, true, false or null item: the caller rejects it.
      const start = i
      while (i + 1 < text.length && !SCALAR_END.has(text.charCodeAt(i + 1))) i++
      spans!.push([start, i + 1])
    }
  }
  return spans
}

const QUOTE = 0x22
const BACKSLASH = 0x5c
const OPEN_BRACE = 0x7b
const CLOSE_BRACE = 0x7d
const OPEN_BRACKET = 0x5b
const CLOSE_BRACKET = 0x5d
const COMMA = 0x2c
const SPACE = 0x20
const SCALAR_END = new Set([COMMA, CLOSE_BRACKET, SPACE, 0x0a, 0x0d, 0x09])

/**
 * A lower bound of the size in bytes of `value`'s JSON text, however it was spelt: every string
 * at least its length plus quotes (a UTF-16 unit is at least one UTF-8 byte; escapes and
 * whitespace only add), every member its key, colon and comma. Cheaper than finding the text
 * (batchItemSpans): a batch whose messages' bounds leave no room for one over the limit needs
 * no scan. Nesting deeper than `depth` counts as an empty object.
 */
export function minimumJsonBytes (value: unknown, depth = 8): number {
  switch (typeof value) {
    case 'string': return value.length + 2
    case 'number': return 1
    case 'boolean': return value ? 4 : 5
    case 'object': {
      if (value === null) return 4
      if (depth === 0) return 2
      let bytes = 2
      if (Array.isArray(value)) {
        for (let i = 0; i < value.length; i++) bytes += minimumJsonBytes(value[i], depth - 1) + 1
        return value.length > 0 ? bytes - 1 : bytes
      }
      let members = 0
      for (const key in value) {
        // Keys that JSON.parse makes: all own, enumerable.
        bytes += key.length + 4 + minimumJsonBytes((value as Record<string, unknown>)[key], depth - 1)
        members++
      }
      return members > 0 ? bytes - 1 : bytes
    }
    default: return 0
  }
}
