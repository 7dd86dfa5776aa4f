import { Type, type TSchema } from 'typebox'

/** Shared schemas: registered with `app.addSchema`, named components in the OpenAPI document. */
export const AdminError = Type.Object({
  statusCode: Type.Integer(),
  error: Type.String(),
  message: Type.String({ description: 'What is wrong, naming the field' })
}, { $id: 'AdminError', description: 'Admin API error' })

export const IngestError = Type.Object({
  success: Type.Literal(false),
  error: Type.String({ description: 'What is wrong, naming the field' })
}, { $id: 'IngestError', description: 'Ingestion error (Segment clients read the status only)' })

export const RejectedMessage = Type.Object({
  index: Type.Integer({ description: 'Position in the batch' }),
  messageId: Type.Optional(Type.String()),
  error: Type.String()
}, { $id: 'RejectedMessage' })

export const IngestSuccess = Type.Object({
  success: Type.Literal(true),
  rejected: Type.Optional(Type.Array(Type.Unsafe({ $ref: 'RejectedMessage#' }), {
    description: 'Messages of the batch that were not accepted, one by one; the others were'
  }))
}, { $id: 'IngestSuccess' })

export const Source = Type.Object({
  id: Type.String(),
  name: Type.String(),
  createdAt: Type.String({ format: 'date-time' }),
  writeKeyHint: Type.String({ description: 'Last four characters of the write key' })
}, { $id: 'Source' })

export const SHARED_SCHEMAS: TSchema[] = [AdminError, IngestError, RejectedMessage, IngestSuccess, Source]

export function ref (schema: TSchema & { $id?: string }) {
  return Type.Unsafe({ $ref: `${schema.$id}#` })
}

/** Admin error responses every protected route can send. */
export const ADMIN_ERRORS = {
  400: ref(AdminError),
  401: ref(AdminError),
  500: ref(AdminError),
  503: ref(AdminError)
}
