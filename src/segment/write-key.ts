/**
 * The write key of a request, looked up in Segment's order: the HTTP Basic user name
 * (`base64("KEY:")`, some clients omit the colon), then the body's `writeKey`, then a message's.
 */
export function writeKeyFromHeader (authorization: string | undefined): string | undefined {
  if (authorization === undefined || authorization.length < 7) return undefined
  if (authorization.slice(0, 6).toLowerCase() !== 'basic ') return undefined
  const decoded = Buffer.from(authorization.slice(6).trim(), 'base64').toString('utf8')
  const colon = decoded.indexOf(':')
  const key = colon === -1 ? decoded : decoded.slice(0, colon)
  return key === '' ? undefined : key
}

export function writeKeyFromBody (body: Record<string, unknown>, messages: readonly unknown[]): string | undefined {
  if (typeof body.writeKey === 'string' && body.writeKey !== '') return body.writeKey
  for (const message of messages) {
    const key = (message as { writeKey?: unknown } | null)?.writeKey
    if (typeof key === 'string' && key !== '') return key
  }
  return undefined
}

const WRITE_KEY_FIELD = '"writeKey"'
const QUOTE = 0x22
const COLON = 0x3a

function isJsonSpace (c: number): boolean {
  return c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09
}

/**
 * The write keys a body's text gives (`"writeKey": "…"`, wherever it is), read without parsing
 * it, so a body without a known key is refused before its parse: `[]` when it gives none;
 * `undefined` when that cannot be told cheaply (a key with an escape in it, more than `max`
 * different ones) — the body is then parsed and checked as usual. A key spelt with escapes
 * (`"write\u004bey"`) is not found: no client writes one so.
 */
export function writeKeysInText (text: string, max = 4): string[] | undefined {
  const keys: string[] = []
  for (let at = text.indexOf(WRITE_KEY_FIELD); at !== -1; at = text.indexOf(WRITE_KEY_FIELD, at + 1)) {
    let i = at + WRITE_KEY_FIELD.length
    while (isJsonSpace(text.charCodeAt(i))) i++
    // A member's name is followed by a colon; the same word as a value is not.
    if (text.charCodeAt(i) !== COLON) continue
    i++
    while (isJsonSpace(text.charCodeAt(i))) i++
    if (text.charCodeAt(i) !== QUOTE) continue
    const end = text.indexOf('"', i + 1)
    if (end === -1) return undefined
    const key = text.slice(i + 1, end)
    if (key.includes('\\')) return undefined
    if (key === '' || keys.includes(key)) continue
    if (keys.length === max) return undefined
    keys.push(key)
  }
  return keys
}
