import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import type { SourceStats } from '../../plugins/sources.js'
import { basicAuth, type TestContext } from './app.js'

export interface SendOptions {
  /** Sent as HTTP Basic (with the colon) unless `auth` says otherwise. */
  writeKey?: string
  auth?: 'basic' | 'basic-no-colon' | 'none'
  headers?: Record<string, string | undefined>
}

/** POSTs `body` (an object is sent as JSON text, a string or Buffer as is) to an ingestion path. */
export function send (app: FastifyInstance, path: string, body: unknown, options: SendOptions = {}): Promise<LightMyRequestResponse> {
  const headers: Record<string, string | undefined> = { 'content-type': 'application/json' }
  if (options.writeKey !== undefined && options.auth !== 'none') {
    headers.authorization = basicAuth(options.writeKey, options.auth !== 'basic-no-colon')
  }
  Object.assign(headers, options.headers)
  const payload = typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body)
  return app.inject({ method: 'POST', url: path, headers, payload })
}

export async function sourceStats (ctx: TestContext, sourceId: string): Promise<SourceStats & { profiles: number }> {
  const { statusCode, json } = await ctx.admin('GET', `/v1/sources/${sourceId}/stats`)
  if (statusCode !== 200) throw new Error(`stats of ${sourceId}: ${statusCode} ${JSON.stringify(json)}`)
  return json
}
