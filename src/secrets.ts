import { randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'

/**
 * A secret read from `dir/name`, or generated once and kept there (mode 0600) so that restarts
 * keep the same admin token and encryption key.
 */
export function keptSecret (dir: string, name: string): { value: string, path: string, created: boolean } {
  const path = resolve(join(dir, name))
  if (existsSync(path)) return { value: readFileSync(path, 'utf8').trim(), path, created: false }
  mkdirSync(resolve(dir), { recursive: true })
  const value = randomBytes(32).toString('base64url')
  writeFileSync(path, value + '\n', { mode: 0o600 })
  return { value, path, created: true }
}
