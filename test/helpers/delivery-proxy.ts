// A real HTTP proxy in front of the fake Graph API that can hold Meta's answers back: it forwards
// each request at once, and while it is closed keeps the answer until `release()`. This lets a
// test put something between Meta answering and the worker reading the answer (a new token,
// say), as a slow network would.
import { createServer, type IncomingMessage } from 'node:http'
import type { AddressInfo } from 'node:net'

export interface GateProxy {
  url: string
  /** answers that came back from upstream and are being held */
  readonly heldAnswers: number
  /** from now on, hold answers until release() */
  hold: () => void
  /** sends the held answers on and stops holding */
  release: () => void
  close: () => Promise<void>
}

async function readAll (req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of req) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
}

export async function startGateProxy (target: string): Promise<GateProxy> {
  let waiting: Array<() => void> | undefined
  let held = 0
  const server = createServer((req, res) => {
    (async () => {
      const body = await readAll(req)
      const upstream = await fetch(`${target}${req.url}`, {
        method: req.method,
        headers: { 'content-type': req.headers['content-type'] ?? 'application/json' },
        body: req.method === 'GET' || req.method === 'HEAD' ? undefined : body
      })
      const answer = Buffer.from(await upstream.arrayBuffer())
      if (waiting !== undefined) {
        held++
        await new Promise<void>((resolve) => waiting!.push(resolve))
        held--
      }
      const headers: Record<string, string> = {}
      upstream.headers.forEach((value, name) => {
        if (name !== 'content-length' && name !== 'transfer-encoding' && name !== 'connection') headers[name] = value
      })
      res.writeHead(upstream.status, headers)
      res.end(answer)
    })().catch(() => { res.destroy() })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    get heldAnswers () { return held },
    hold: () => { waiting ??= [] },
    release: () => {
      const resolvers = waiting ?? []
      waiting = undefined
      for (const resolve of resolvers) resolve()
    },
    close: () => new Promise<void>((resolve) => {
      const resolvers = waiting ?? []
      waiting = undefined
      for (const resolve of resolvers) resolve()
      server.close(() => resolve())
      server.closeAllConnections()
    })
  }
}
