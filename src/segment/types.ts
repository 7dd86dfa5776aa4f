/** The six calls of the Segment spec. */
export type MessageType = 'track' | 'identify' | 'page' | 'screen' | 'group' | 'alias'

/**
 * A Segment message as the ingestion API stores it: validated, with the server fields set
 * (`messageId`, `receivedAt`, `originalTimestamp`, skew-corrected `timestamp`) and the batch's
 * `context`/`integrations` merged in. Every time is an ISO-8601 string.
 */
export interface SegmentMessage {
  type: MessageType
  messageId: string
  userId?: string
  anonymousId?: string
  event?: string
  name?: string
  category?: string
  groupId?: string
  previousId?: string
  properties?: Record<string, unknown>
  traits?: Record<string, unknown>
  context?: Record<string, unknown>
  integrations?: Record<string, unknown>
  timestamp: string
  originalTimestamp: string
  receivedAt: string
  sentAt?: string
  [key: string]: unknown
}
