import { randomBytes } from 'node:crypto'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { htmlPageHeaders } from '../../plugins/http-hardening.js'
import { safeEqual } from '../../plugins/sources.js'
import { DEFAULT_GRAPH_VERSION } from '../facebook/settings.js'
import { ADMIN_ERRORS, AdminError, ref } from './schemas.js'

// The seed: connecting asks for ads_management and public_profile; the person connecting must be
// an admin of the Business Manager.
const SCOPES = 'ads_management,public_profile'
const STATE_TTL_SECONDS = 600
const CALLBACK_PATH = '/oauth/facebook/callback'
/** Binds a flow's state to the browser that started it: set by /oauth/start, checked by the callback. */
export const STATE_COOKIE = 'relay_oauth_state'

/** A cookie's value in a Cookie header, or undefined. */
export function cookieValue (header: string | undefined, name: string): string | undefined {
  if (header === undefined) return undefined
  for (const part of header.split(';')) {
    const eq = part.indexOf('=')
    if (eq !== -1 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim()
  }
  return undefined
}

function page (title: string, text: string): string {
  const escape = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)
  return `<!doctype html><html><head><meta charset="utf-8"><title>${escape(title)}</title></head>` +
    `<body style="font-family: system-ui, sans-serif; max-width: 40em; margin: 4em auto"><h1>${escape(title)}</h1><p>${escape(text)}</p></body></html>`
}

/**
 * "Connect to Facebook": the admin starts the OAuth dialog for a destination; Meta sends the browser
 * back to the callback with a code, which is exchanged for a token and then for a long-lived one,
 * stored encrypted. The callback is public: the one-time `state` ties it to the destination, and a
 * short-lived cookie set with it (HttpOnly, SameSite=Lax, Secure under an https PUBLIC_URL, sent to
 * the callback's path only) ties it to the browser that started the flow — a callback URL that
 * leaked (a log, a screenshot, a Referer) is refused anywhere else. The exchanges POST the client
 * secret and the code in a form body: a URL is kept by proxies and logs.
 */
const oauth: FastifyPluginAsyncTypebox = async (app) => {
  const config = app.config
  // Browser pages (the callback answers HTML): helmet's headers on this plugin's routes.
  await htmlPageHeaders(app)
  const redirectUri = config.PUBLIC_URL === undefined ? undefined : `${config.PUBLIC_URL.replace(/\/$/, '')}${CALLBACK_PATH}`
  const missing = [
    config.FACEBOOK_APP_ID === undefined && 'FACEBOOK_APP_ID',
    config.FACEBOOK_APP_SECRET === undefined && 'FACEBOOK_APP_SECRET',
    config.PUBLIC_URL === undefined && 'PUBLIC_URL'
  ].filter(Boolean)
  // The cookie goes back only to the callback, at the path the browser sees (PUBLIC_URL's).
  const cookieAttributes = redirectUri === undefined
    ? ''
    : `; Path=${new URL(redirectUri).pathname}; HttpOnly; SameSite=Lax${redirectUri.startsWith('https:') ? '; Secure' : ''}`
  const stateCookie = (state: string) => `${STATE_COOKIE}=${state}; Max-Age=${STATE_TTL_SECONDS}${cookieAttributes}`
  const clearedStateCookie = `${STATE_COOKIE}=; Max-Age=0${cookieAttributes}`

  app.get('/v1/destinations/:destinationId/oauth/start', {
    // A browser is sent here: the admin token as Bearer, as the HTTP Basic password (the
    // browser's prompt), or the web app's admin session (plugins/auth.ts).
    onRequest: app.requireAdminInBrowser,
    schema: {
      tags: ['destinations'],
      summary: 'Start "Connect to Facebook" in the browser that will be sent to Meta: 302 to Meta\'s OAuth dialog, with a cookie that binds the flow to this browser (needs FACEBOOK_APP_ID, FACEBOOK_APP_SECRET, PUBLIC_URL). ' +
        'Takes the admin token as Bearer or as the HTTP Basic password, or the web app\'s admin session',
      security: [{ adminToken: [] }],
      params: Type.Object({ destinationId: Type.String() }),
      response: {
        302: Type.Null({ description: `Redirect to the dialog; sets the cookie ${STATE_COOKIE} (HttpOnly, SameSite=Lax, ${STATE_TTL_SECONDS / 60} minutes) the callback checks` }),
        404: ref(AdminError),
        ...ADMIN_ERRORS
      }
    }
  }, async (request, reply) => {
    if (missing.length > 0) return reply.code(400).send({ statusCode: 400, error: 'Bad Request', message: `OAuth is not configured: set ${missing.join(', ')}` })
    const destination = await app.destinations.get(request.params.destinationId)
    if (destination === undefined) return reply.code(404).send({ statusCode: 404, error: 'Not Found', message: `destination ${request.params.destinationId} does not exist` })
    const state = randomBytes(24).toString('base64url')
    await app.redis.set(app.keys.oauthState(state), destination.id, 'EX', STATE_TTL_SECONDS)
    const dialog = new URL(config.FACEBOOK_OAUTH_DIALOG_URL)
    dialog.search = new URLSearchParams({ client_id: config.FACEBOOK_APP_ID!, redirect_uri: redirectUri!, state, scope: SCOPES, response_type: 'code' }).toString()
    reply.header('set-cookie', stateCookie(state))
    return reply.redirect(dialog.toString(), 302)
  })

  app.get(CALLBACK_PATH, {
    // The query holds a one-time code: keep it out of the request log.
    logLevel: 'warn',
    schema: {
      tags: ['destinations'],
      summary: `OAuth callback from Meta (public): stores a long-lived token for the destination. Refused (400) without the ${STATE_COOKIE} cookie of the browser that started the flow, or with another flow's`,
      querystring: Type.Object({
        code: Type.Optional(Type.String()),
        state: Type.Optional(Type.String()),
        error: Type.Optional(Type.String()),
        error_description: Type.Optional(Type.String())
      }),
      response: {
        200: Type.String({ description: 'An HTML page saying the destination is connected' }),
        400: Type.String({ description: 'An HTML page saying what went wrong' }),
        502: Type.String({ description: 'An HTML page: Meta refused the exchange' })
      }
    }
  }, async (request, reply) => {
    reply.type('text/html; charset=utf-8')
    const { code, state, error } = request.query
    if (state === undefined) return reply.code(400).send(page('Not connected', 'The link has no state; start again from the destination.'))
    // Checked before the state is used up: a leaked link opened elsewhere leaves the real flow working.
    const bound = cookieValue(request.headers.cookie, STATE_COOKIE)
    if (bound === undefined) {
      request.log.warn('OAuth callback refused: no state cookie (another browser, or over the time limit)')
      return reply.code(400).send(page('Not connected', `This browser did not start this connection, or took more than ${STATE_TTL_SECONDS / 60} minutes. Start again from the destination, in the browser you will use on Facebook.`))
    }
    if (!safeEqual(bound, state)) {
      request.log.warn('OAuth callback refused: the state is not the one this browser\'s flow started')
      return reply.code(400).send(page('Not connected', 'This link is not for the connection this browser started (another one was started since, or the link came from elsewhere). Start again from the destination.'))
    }
    // The flow ends here whatever happens next.
    reply.header('set-cookie', clearedStateCookie)
    const destinationId = await app.redis.getdel(app.keys.oauthState(state))
    if (destinationId === null) return reply.code(400).send(page('Not connected', 'This link has expired or was already used; start again from the destination.'))
    if (error !== undefined || code === undefined) {
      return reply.code(400).send(page('Not connected', `Facebook did not authorise the connection (${request.query.error_description ?? error ?? 'no code'}). The person connecting must be an admin of the Business Manager.`))
    }
    // Deleted while its owner was on Facebook's dialog: storing a token would leave an orphan key.
    if (await app.destinations.get(destinationId) === undefined) {
      return reply.code(400).send(page('Not connected', 'This destination was deleted while it was being connected.'))
    }
    try {
      const short = await exchange({ client_id: config.FACEBOOK_APP_ID!, client_secret: config.FACEBOOK_APP_SECRET!, redirect_uri: redirectUri!, code })
      const long = await exchange({ grant_type: 'fb_exchange_token', client_id: config.FACEBOOK_APP_ID!, client_secret: config.FACEBOOK_APP_SECRET!, fb_exchange_token: short })
      await app.connectDestinationToken(destinationId, long)
    } catch (err) {
      request.log.warn({ err: (err as Error).message, destinationId }, 'OAuth token exchange failed')
      return reply.code(502).send(page('Not connected', `Facebook refused the token exchange: ${(err as Error).message}`))
    }
    request.log.info({ destinationId }, 'destination connected to Facebook')
    return reply.send(page('Connected', 'The destination is connected to Facebook. Conversions held for a token are on their way. You can close this page.'))
  })

  /** One token exchange: a POST whose form body carries the secret and the code (never a URL). */
  async function exchange (params: Record<string, string>): Promise<string> {
    const url = `${config.FACEBOOK_GRAPH_URL.replace(/\/$/, '')}/${DEFAULT_GRAPH_VERSION}/oauth/access_token`
    const response = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams(params).toString(),
      signal: AbortSignal.timeout(config.GRAPH_TIMEOUT_MS)
    })
    const body = await response.json().catch(() => ({})) as { access_token?: string, error?: { message?: string } }
    if (!response.ok || typeof body.access_token !== 'string') throw new Error(body.error?.message ?? `HTTP ${response.status}`)
    return body.access_token
  }
}

export default oauth
