import type { Submission } from '../plugins/ingest-buffer.js'

/**
 * The ingest partition of a message's partition key (FNV-1a over its UTF-16 units; see
 * partitionKey): the same key always lands in the same partition.
 */
export function partitionOf (id: string, partitions: number): number {
  if (partitions === 1) return 0
  let hash = 0x811c9dc5
  for (let i = 0; i < id.length; i++) {
    hash ^= id.charCodeAt(i)
    hash = Math.imul(hash, 0x01000193)
  }
  return (hash >>> 0) % partitions
}

/**
 * What decides a message's partition: its user — `anonymousId`, else `userId` — else its
 * `messageId`. One user's messages share a partition, so a batch's messages for a user are
 * processed in the order sent (an identify before the order whose match keys it gives, a consent
 * change before the events after it), which messages in different partitions are not. A message
 * sent again (a client's retry: the same message) is in the same partition as before, whose
 * duplicate window alone remembers its id: the duplicate check stays exact.
 */
export function partitionKey (message: { anonymousId?: string, userId?: string, messageId?: string }): string | undefined {
  return message.anonymousId ?? message.userId ?? message.messageId
}

/**
 * A request's submission as one per partition its messages go to (`keyOf(index)`: the message's
 * partitionKey; without one it goes with the request's first message). A request whose messages
 * all land in one partition keeps its body as sent; otherwise each part's body is written by
 * `partBody` (the messages at those indexes, in order) and records their `positions`. The
 * request's rejected messages are counted with its first part.
 */
export function splitByPartition (submission: Submission, partitions: number, keyOf: (index: number) => string | undefined, partBody: (positions: number[]) => Buffer): Submission[] {
  const { request, ids, indexes } = submission
  if (partitions === 1) return [{ ...submission, partition: 0 }]
  const skip = new Set(request.skip)
  const total = submission.valid + submission.rejected
  let first = 0
  while (first < total && skip.has(first)) first++
  const home = partitionOf((first < total ? keyOf(first) : undefined) ?? request.idPrefix ?? request.sourceId, partitions)
  if (submission.valid === 0) return [{ ...submission, partition: home }]
  const idAt = new Map<number, string>()
  for (let k = 0; k < ids.length; k++) idAt.set(indexes[k], ids[k])
  const byPartition = new Map<number, number[]>()
  for (let index = 0; index < total; index++) {
    if (skip.has(index)) continue
    const key = keyOf(index)
    const partition = key === undefined ? home : partitionOf(key, partitions)
    let positions = byPartition.get(partition)
    if (positions === undefined) byPartition.set(partition, (positions = []))
    positions.push(index)
  }
  if (byPartition.size === 1) return [{ ...submission, partition: byPartition.keys().next().value! }]
  const subjectsAt = new Map(submission.subjects?.map((subject) => [subject[0], subject]))
  const parts: Submission[] = []
  for (const [partition, positions] of byPartition) {
    const partIds: string[] = []
    const partIndexes: number[] = []
    const partSubjects: NonNullable<Submission['subjects']> = []
    positions.forEach((index, k) => {
      const id = idAt.get(index)
      if (id !== undefined) {
        partIds.push(id)
        partIndexes.push(k)
      }
      const subject = subjectsAt.get(index)
      if (subject !== undefined) partSubjects.push([k, subject[1], subject[2]])
    })
    const part: Submission = {
      request: { sourceId: request.sourceId, receivedAt: request.receivedAt, idPrefix: request.idPrefix, positions },
      body: partBody(positions),
      valid: positions.length,
      ids: partIds,
      indexes: partIndexes,
      rejected: parts.length === 0 ? submission.rejected : 0,
      partition
    }
    if (submission.subjects !== undefined) part.subjects = partSubjects
    parts.push(part)
  }
  return parts
}
