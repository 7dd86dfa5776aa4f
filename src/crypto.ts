import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto'

// Access tokens at rest: AES-256-GCM under a key derived from SECRET_KEY (HKDF-SHA256), so the
// stored form reveals nothing and any tampering fails authentication. Format: `v1.<base64url of
// iv | tag | ciphertext>`.
const VERSION = 'v1'

function keyFor (secret: string): Buffer {
  return Buffer.from(hkdfSync('sha256', secret, 'conversion-relay', 'access-token-encryption', 32))
}

export function encryptSecret (plain: string, secret: string): string {
  const iv = randomBytes(12)
  const cipher = createCipheriv('aes-256-gcm', keyFor(secret), iv)
  const ciphertext = Buffer.concat([cipher.update(plain, 'utf8'), cipher.final()])
  return `${VERSION}.${Buffer.concat([iv, cipher.getAuthTag(), ciphertext]).toString('base64url')}`
}

/** Throws when the value was not encrypted with this secret or was altered. */
export function decryptSecret (stored: string, secret: string): string {
  const [version, body] = stored.split('.')
  if (version !== VERSION || body === undefined) throw new Error('unknown encrypted value format')
  const raw = Buffer.from(body, 'base64url')
  const decipher = createDecipheriv('aes-256-gcm', keyFor(secret), raw.subarray(0, 12))
  decipher.setAuthTag(raw.subarray(12, 28))
  return Buffer.concat([decipher.update(raw.subarray(28)), decipher.final()]).toString('utf8')
}
