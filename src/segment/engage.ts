import type { SegmentMessage } from './types.js'

/** An Engage audience membership carried by an identify (ours, or a real Engage workspace's). */
export interface AudienceChange {
  /** `context.personas.computation_id`: the audience that sent it */
  computationId?: string
  /** `computation_key`: the user property, e.g. `order_completed_last_30days` */
  key: string
  member: boolean
}

/**
 * Engage's shape (spec/segment.md): an identify with `context.personas.computation_class:
 * "audience"`, its `computation_key`, and `traits[<key>]` true or false. Anything else is not one.
 */
export function audienceChange (message: SegmentMessage): AudienceChange | undefined {
  if (message.type !== 'identify') return undefined
  const personas = (message.context as { personas?: Record<string, unknown> } | undefined)?.personas
  if (typeof personas !== 'object' || personas === null) return undefined
  if (personas.computation_class !== 'audience' || typeof personas.computation_key !== 'string') return undefined
  // Own properties only: `constructor` or `toString` as a key must not find Object.prototype's.
  const traits = message.traits
  const member = traits !== undefined && Object.hasOwn(traits, personas.computation_key) ? traits[personas.computation_key] : undefined
  if (typeof member !== 'boolean') return undefined
  const computationId = typeof personas.computation_id === 'string' ? personas.computation_id : undefined
  return { computationId, key: personas.computation_key, member }
}
