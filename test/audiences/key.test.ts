import t from 'tap'
import { AUDIENCE_KEY_MAX_LENGTH, audienceKeyFromName, checkAudienceKey, MATCH_KEY_TRAITS } from '../../src/audiences/key.js'

// name → key, per spec/segment.md's rule
const DERIVED: ReadonlyArray<readonly [string, string]> = [
  // the seed's example
  ['Order Completed Last 30days', 'order_completed_last_30days'],
  ['order_completed_last_30days', 'order_completed_last_30days'],
  // letters and digits are not split
  ['30days', '30days'],
  ['Last30Days', 'last30days'],
  ['v2 users', 'v2_users'],
  ['2024', '2024'],
  // a lower-case letter before an upper-case one splits; acronyms stay whole
  ['HighValue', 'high_value'],
  ['highValueCustomers', 'high_value_customers'],
  ['HTTPServer', 'httpserver'],
  ['getHTTPResponse', 'get_httpresponse'],
  ['iPhone Users', 'i_phone_users'],
  ['ALL CAPS', 'all_caps'],
  // runs of anything else become one `_`
  ['Order  Completed', 'order_completed'],
  ['Order - Completed!', 'order_completed'],
  ['Men\'s Shoes', 'men_s_shoes'],
  ['a.b/c:d', 'a_b_c_d'],
  ['tab\tand\nnewline', 'tab_and_newline'],
  ['snake__case', 'snake_case'],
  ['emoji 🎉 fans', 'emoji_fans'],
  // no leading or trailing `_`
  ['  __Big Spenders__  ', 'big_spenders'],
  ['!!!VIP???', 'vip'],
  // any script; accents stay
  ['Café', 'café'],
  ['CAFÉ Crème', 'café_crème'],
  ['Straße', 'straße'],
  ['Ελληνικά Πελάτες', 'ελληνικά_πελάτες'],
  ['Кириллица Тест', 'кириллица_тест'],
  ['日本語 ユーザー', '日本語_ユーザー'],
  ['हिन्दी ग्राहक', 'हिन्दी_ग्राहक'],
  ['عملاء 2024', 'عملاء_2024'],
  // digits of other scripts are digits
  ['Top ٣ Buyers', 'top_٣_buyers'],
  // a lower-case Greek letter before an upper-case one splits like Latin
  ['αΒ', 'α_β']
]

t.test('keys derived from names', async (t) => {
  for (const [name, key] of DERIVED) t.equal(audienceKeyFromName(name), key, JSON.stringify(name))
})

t.test('names in decomposed form give the same key as composed ones', async (t) => {
  const decomposed = 'Cafe\u0301 Cre\u0300me'
  t.equal(audienceKeyFromName(decomposed), 'café_crème')
  t.equal(audienceKeyFromName(decomposed), audienceKeyFromName(decomposed.normalize('NFC')))
  // a combining mark with no letter before it is a separator
  t.equal(audienceKeyFromName('\u0301abc'), 'abc')
  t.equal(audienceKeyFromName('a \u0301b'), 'a_b')
})

t.test('a name with no letter or digit has no key', async (t) => {
  for (const name of ['', ' ', '___', '!!!', '🎉🎉', '\u0301']) t.equal(audienceKeyFromName(name), undefined, JSON.stringify(name))
})

t.test('keys are cut at 100 characters, without a trailing _', async (t) => {
  t.equal(AUDIENCE_KEY_MAX_LENGTH, 100)
  const long = 'a'.repeat(150)
  t.equal(audienceKeyFromName(long), 'a'.repeat(100))
  // the cut lands just after a separator: it is dropped
  t.equal(audienceKeyFromName(`${'a'.repeat(99)} bcd`), 'a'.repeat(99))
  t.equal(audienceKeyFromName(`${'a'.repeat(98)}  b`), `${'a'.repeat(98)}_b`)
  // characters are code points: letters outside the BMP are not split in half
  const gothic = '𐌰'.repeat(120)
  const cut = audienceKeyFromName(gothic) as string
  t.equal(Array.from(cut).length, 100)
  t.equal(cut, '𐌰'.repeat(100))
  t.equal(cut.length, 200, 'two UTF-16 units each')
})

t.test('a derived key is already canonical: deriving it again changes nothing', async (t) => {
  const names = [...DERIVED.map(([name]) => name), 'x'.repeat(150), `${'a'.repeat(99)} b`, 'İstanbul Shoppers', 'ǅemal']
  for (const name of names) {
    const key = audienceKeyFromName(name) as string
    t.equal(audienceKeyFromName(key), key, JSON.stringify(name))
  }
})

t.test('explicit keys must be canonical', async (t) => {
  const rule = 'key must be snake_case letters and digits (e.g. "order_completed_last_30days")'
  for (const key of ['Order Completed', 'orderCompleted', 'order-completed', '_order', 'order_', 'order__completed', '', ' ', 'ORDER', 'Café']) {
    t.equal(checkAudienceKey(key), rule, JSON.stringify(key))
  }
  // the decomposed form is not canonical: keys are compared byte for byte downstream
  t.equal(checkAudienceKey('cafe\u0301'), rule)
  for (const key of ['order_completed_last_30days', 'vip', '30days', 'café', 'ελληνικά_πελάτες', 'a'.repeat(100)]) {
    t.equal(checkAudienceKey(key), undefined, JSON.stringify(key))
  }
  t.equal(checkAudienceKey('a'.repeat(101)), 'key must be at most 100 characters')
})

t.test('explicit keys must not collide with match-key traits, in any case form or spelling', async (t) => {
  t.same(MATCH_KEY_TRAITS, ['email', 'phone', 'firstName', 'lastName', 'name', 'gender', 'birthday', 'address'])
  const collisions: ReadonlyArray<readonly [string, string]> = [
    ['email', 'email'],
    ['e_mail', 'email'],
    ['phone', 'phone'],
    ['first_name', 'firstName'],
    ['firstname', 'firstName'],
    ['last_name', 'lastName'],
    ['name', 'name'],
    ['gender', 'gender'],
    ['birthday', 'birthday'],
    ['birth_day', 'birthday'],
    ['address', 'address'],
    // every spelling of a match-key trait (src/facebook/trait-spellings.ts)
    ['full_name', 'name'],
    ['phone_number', 'phone'],
    ['mobile', 'phone'],
    ['email_address', 'email'],
    ['given_name', 'firstName'],
    ['surname', 'lastName'],
    ['sex', 'gender'],
    ['dob', 'birthday'],
    ['date_of_birth', 'birthday'],
    ['zip', 'address.postalCode'],
    ['postal_code', 'address.postalCode'],
    ['city', 'address.city'],
    ['state', 'address.state'],
    ['country_code', 'address.country']
  ]
  for (const [key, trait] of collisions) {
    t.equal(checkAudienceKey(key), `key "${key}" collides with the match-key trait "${trait}"`, key)
  }
  // a key derived from a name gets the same check
  t.equal(checkAudienceKey(audienceKeyFromName('First Name') as string), 'key "first_name" collides with the match-key trait "firstName"')
  for (const key of ['email_subscribers', 'phone_users', 'named', 'addresses', 'region', 'mail', 'constructor', 'to_string', 'has_own_property', 'proto']) {
    t.equal(checkAudienceKey(key), undefined, key)
  }
})
