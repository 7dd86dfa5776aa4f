import type { Submission } from '../plugins/ingest-buffer.js'

/**
 * The ingest partition of a message id (FNV-1a over its UTF-16 units): the same id always lands
 * in the same partition, whose duplicate window alone remembers it — so a message sent again, in
 * any request, is found there.
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
 * A request's submission as one per partition its messages go to. A message with an id goes to
 * its id's partition; one without (ids the server gives are new, never checked) goes with the
 * request's first id, so a batch whose messages mostly have none is not split for them. A request
 * whose messages all land in one partition keeps its body as sent; otherwise each part's body is
 * written by `partBody` (the messages at those indexes, in order) and records their `positions`.
 * The request's rejected messages are counted with its first part.
 */
export function splitByPartition (submission: Submission, partitions: number, partBody: (positions: number[]) => Buffer): Submission[] {
  const { request, ids, indexes } = submission
  const home = partitionOf(ids[0] ?? request.idPrefix ?? request.sourceId, partitions)
  if (partitions === 1 || submission.valid === 0) return [{ ...submission, partition: home }]
  const idAt = new Map<number, string>()
  for (let k = 0; k < ids.length; k++) idAt.set(indexes[k], ids[k])
  const skip = new Set(request.skip)
  const total = submission.valid + submission.rejected
  const byPartition = new Map<number, number[]>()
  for (let index = 0; index < total; index++) {
    if (skip.has(index)) continue
    const id = idAt.get(index)
    const partition = id === undefined ? home : partitionOf(id, partitions)
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
