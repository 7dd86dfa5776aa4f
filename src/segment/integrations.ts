// Segment's `integrations` object: which destinations a message goes to, and per-destination
// options. Semantics follow Segment's: `All` is on unless it is `false`; a destination's own
// entry wins over `All` — `true` or an object of options turns it on, `false` turns it off.
// Names are matched exactly (case-sensitive), as Segment does.

function isOptionsObject (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/**
 * Whether a message's `integrations` let it reach the destination called `destinationName`.
 * An own entry that is neither a boolean nor an object (`null`, `"false"`, `0`) says nothing,
 * so `All` decides: only a real `false` turns a destination off.
 */
export function isDestinationEnabled (integrations: Record<string, unknown> | undefined, destinationName: string): boolean {
  if (!isOptionsObject(integrations)) return true
  if (Object.hasOwn(integrations, destinationName)) {
    const own = integrations[destinationName]
    if (typeof own === 'boolean') return own
    // Segment: an object of options means "on, with these options", even under `All: false`
    if (isOptionsObject(own)) return true
  }
  return integrations.All !== false
}

/** The destination's options (`integrations[destinationName]` when it is an object). */
export function destinationOptions (integrations: Record<string, unknown> | undefined, destinationName: string): Record<string, unknown> | undefined {
  if (!isOptionsObject(integrations) || !Object.hasOwn(integrations, destinationName)) return undefined
  const own = integrations[destinationName]
  return isOptionsObject(own) ? own : undefined
}
