import helmet, { type FastifyHelmetOptions } from '@fastify/helmet'
import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { REQUEST_ID_HEADER } from '../src/http-options.js'

/**
 * Helmet's headers for the HTML pages — the Swagger UI (/docs), the queue dashboard
 * (/admin/queues) and the OAuth pages — and not for the JSON APIs, whose CORS and hot path they
 * would only get in the way of. The policy allows what those pages load and nothing more:
 * - scripts from this origin only: both UIs load their bundles as files (bull-board's
 *   `<script type="application/json">` config is data, not run);
 * - inline styles: bull-board's loading screen and the OAuth pages use style attributes, and both
 *   UIs' React code sets styles; bull-board also loads IBM Plex from Google Fonts;
 * - `data:` images (Swagger UI's icons in its CSS);
 * - no framing at all (clickjacking: the dashboard can retry and delete jobs).
 * Helmet's `upgrade-insecure-requests` is left out: a self-hosted relay is often reached over plain
 * HTTP on a private network, where it would send the pages' own assets to an https:// that does
 * not answer. HSTS is left out too: it belongs to the proxy that terminates TLS, and helmet's
 * `includeSubDomains` would pin every host of the operator's domain to HTTPS.
 */
export const HTML_PAGE_HEADERS: FastifyHelmetOptions = {
  contentSecurityPolicy: {
    useDefaults: false,
    directives: {
      defaultSrc: ["'self'"],
      baseUri: ["'self'"],
      connectSrc: ["'self'"],
      fontSrc: ["'self'", 'data:', 'https://fonts.gstatic.com'],
      formAction: ["'self'"],
      frameAncestors: ["'none'"],
      imgSrc: ["'self'", 'data:'],
      objectSrc: ["'none'"],
      scriptSrc: ["'self'"],
      scriptSrcAttr: ["'none'"],
      styleSrc: ["'self'", "'unsafe-inline'", 'https://fonts.googleapis.com']
    }
  },
  xFrameOptions: { action: 'deny' },
  strictTransportSecurity: false
}

/** Registers helmet, with the policy above, on the routes of the calling (encapsulated) plugin. */
export async function htmlPageHeaders (scope: FastifyInstance): Promise<void> {
  await scope.register(helmet, HTML_PAGE_HEADERS)
}

/**
 * App-wide: every answer — errors, 404s and 405s included, on every route — carries the
 * request's id (see `requestId` in src/http-options.ts), the one its log lines carry as `reqId`.
 */
export default fp(async (app) => {
  // In callback form and first at the root: it runs on every request of the hottest routes.
  app.addHook('onRequest', (request, reply, done) => {
    reply.header(REQUEST_ID_HEADER, request.id)
    done()
  })
}, { name: 'http-hardening' })
