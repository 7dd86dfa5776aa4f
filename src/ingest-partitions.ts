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

/** A message's ids that decide its partition. */
export interface PartitionIds { userId?: string, anonymousId?: string, messageId?: string }

/**
 * What decides a single message's partition: its user — `userId`, else `anonymousId` — else its
 * `messageId`. A message sent again (a client's retry: the same message) lands in the same
 * partition as before, whose duplicate window alone remembers its id: the duplicate check stays
 * exact.
 */
export function partitionKey (message: PartitionIds): string | undefined {
  return message.userId ?? message.anonymousId ?? message.messageId
}

/**
 * A request's submission as one per partition its messages go to. Messages of a batch that share
 * a user — a userId or an anonymousId, directly or through another message (an identify with
 * both joins them) — go to one partition, that of the first one's partitionKey, so they are
 * processed in the order sent (an identify before the order whose match keys it gives, a consent
 * change before the events after it, an anonymous track after the identify that names its user);
 * messages in different partitions are processed side by side. A message without ids goes with
 * the request's first. A request whose messages all land in one partition keeps its body as sent;
 * otherwise each part's body is written by `partBody` (the messages at those indexes, in order)
 * and records their `positions`. The request's rejected messages are counted with its first part.
 */
export function splitByPartition (submission: Submission, partitions: number, idsOf: (index: number) => PartitionIds, partBody: (positions: number[]) => Buffer): Submission[] {
  const { request, ids, indexes } = submission
  if (partitions === 1) return [{ ...submission, partition: 0 }]
  const skip = new Set(request.skip)
  const total = submission.valid + submission.rejected
  let first = 0
  while (first < total && skip.has(first)) first++
  const home = partitionOf((first < total ? partitionKey(idsOf(first)) : undefined) ?? request.idPrefix ?? request.sourceId, partitions)
  if (submission.valid === 0 || (request.pathType !== undefined)) return [{ ...submission, partition: home }]
  const idAt = new Map<number, string>()
  for (let k = 0; k < ids.length; k++) idAt.set(indexes[k], ids[k])
  // Groups of messages joined by a shared userId or anonymousId (union-find; a group's key is
  // its first message's).
  const parent: number[] = []
  const find = (g: number): number => { while (parent[g] !== g) g = parent[g] = parent[parent[g]]; return g }
  const groupKey: Array<string | undefined> = []
  const groupOfId = new Map<string, number>()
  const groupOf = new Map<number, number>()
  for (let index = 0; index < total; index++) {
    if (skip.has(index)) continue
    const message = idsOf(index)
    let group = -1
    for (const id of [message.userId === undefined ? undefined : `u:${message.userId}`, message.anonymousId === undefined ? undefined : `a:${message.anonymousId}`]) {
      if (id === undefined) continue
      const found = groupOfId.get(id)
      if (found === undefined) continue
      const root = find(found)
      if (group < 0) group = root
      else if (root !== group) parent[Math.max(root, group)] = Math.min(root, group)
      group = find(group)
    }
    if (group < 0) {
      group = parent.length
      parent.push(group)
      groupKey.push(partitionKey(message))
    }
    for (const id of [message.userId === undefined ? undefined : `u:${message.userId}`, message.anonymousId === undefined ? undefined : `a:${message.anonymousId}`]) {
      if (id !== undefined && !groupOfId.has(id)) groupOfId.set(id, group)
    }
    groupOf.set(index, group)
  }
  const byPartition = new Map<number, number[]>()
  for (const [index, group] of groupOf) {
    const key = groupKey[find(group)]
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
