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
