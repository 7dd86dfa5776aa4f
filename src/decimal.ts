// Numbers that clients send as text (`"39.95"`, `"1e3"`): plain decimal notation only. Number()
// alone would also read `"0x10"`, `"Infinity"`, `""` and `" "` (as 0).
//
// The pattern is unambiguous — each digit can belong to one part only — so a failing match takes
// time linear in the text's length. `\d+\.?\d*` (what this replaced) lets a run of digits split
// between its two parts in every way: 32,000 digits and an `x` took over half a second a value.
const DECIMAL = /^[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?$/

// Longer than any decimal a client means (a double prints in at most ~25 significant digits):
// such a text is not read at all.
const MAX_DECIMAL_LENGTH = 400

/** The number a plain decimal text spells (surrounding whitespace allowed), else NaN. */
export function parseDecimal (text: string): number {
  if (text.length > MAX_DECIMAL_LENGTH) return Number.NaN
  const trimmed = text.trim()
  return DECIMAL.test(trimmed) ? Number(trimmed) : Number.NaN
}
