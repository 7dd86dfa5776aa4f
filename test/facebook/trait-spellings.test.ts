import t from 'tap'
import {
  addressPartOf,
  CANONICAL_MATCH_KEY_TRAITS,
  foldTraitName,
  isMatchKeyTrait,
  matchKeyTraitOf,
  type MatchKeyTrait
} from '../../src/facebook/trait-spellings.js'

t.test('the canonical Segment traits are match-key traits, spelled as themselves', async (t) => {
  t.same(CANONICAL_MATCH_KEY_TRAITS, ['email', 'phone', 'firstName', 'lastName', 'name', 'gender', 'birthday', 'address'])
  for (const trait of CANONICAL_MATCH_KEY_TRAITS) {
    t.equal(matchKeyTraitOf(trait), trait, trait)
    t.ok(isMatchKeyTrait(trait), trait)
  }
})

t.test('spellings real sources send: each is the key it spells', async (t) => {
  const spellings: Array<[MatchKeyTrait, string[]]> = [
    ['email', ['e-mail', 'e_mail', 'E-Mail', 'emailAddress', 'email_address', 'Email', '$email', 'user_email']],
    ['phone', ['phone_number', 'phoneNumber', 'PhoneNumber', 'mobile', 'mobile_phone', 'mobilePhone', 'mobile_number', 'cell', 'cell_phone', 'cellphone', 'telephone', 'tel', '$phone']],
    ['firstName', ['first_name', 'firstname', 'FirstName', 'given_name', 'givenName', 'FNAME', 'fname', '$first_name']],
    ['lastName', ['last_name', 'lastname', 'surname', 'family_name', 'familyName', 'LNAME', '$last_name']],
    ['name', ['full_name', 'fullName', 'Name', '$name']],
    ['gender', ['sex', 'Gender', 'SEX']],
    ['birthday', ['dob', 'DOB', 'birth_date', 'birthdate', 'birthDate', 'date_of_birth', 'dateOfBirth', 'birth_day']],
    ['address', ['Address']],
    ['address.city', ['city', 'City', '$city', 'address_city']],
    ['address.state', ['state', 'province', 'state_code', 'State']],
    ['address.postalCode', ['zip', 'zip_code', 'zipCode', 'zipcode', 'postal_code', 'postalCode', 'postcode', 'post_code', 'ZIP']],
    ['address.country', ['country', 'country_code', 'countryCode', 'Country', '$country_code']]
  ]
  for (const [trait, names] of spellings) {
    for (const name of names) {
      t.equal(matchKeyTraitOf(name), trait, name)
      t.ok(isMatchKeyTrait(name), name)
    }
  }
})

t.test('spellings are matched without case and separators: Phone_Number, phone-number and phoneNumber are one', async (t) => {
  for (const name of ['Phone_Number', 'phone-number', 'phoneNumber', 'PHONE NUMBER', 'phone.number', 'phone__number']) {
    t.equal(foldTraitName(name), 'phonenumber', name)
    t.equal(matchKeyTraitOf(name), 'phone', name)
  }
  t.equal(matchKeyTraitOf('phone_number'), matchKeyTraitOf('phone_number'), 'remembered: the same answer again')
})

t.test('other traits, words too generic to be PII, and prototype names are not match-key traits', async (t) => {
  const others = [
    'plan', 'logins', 'company', 'mail', 'region', 'town', 'display_name', 'user', 'username', 'title', 'age',
    'email_subscribers', 'phone_users', 'named', 'addresses', 'phones', 'emails', 'status', 'vip',
    'constructor', '__proto__', 'toString', 'hasOwnProperty', 'valueOf', 'isPrototypeOf', '', '_', '$', 'e', 'x'.repeat(100_000)
  ]
  for (const name of others) {
    t.equal(matchKeyTraitOf(name), undefined, name.slice(0, 30))
    t.notOk(isMatchKeyTrait(name), name.slice(0, 30))
  }
  t.equal(matchKeyTraitOf(`${'_'.repeat(100)}email`), undefined, 'a name far longer than any spelling is none, whatever it folds to')
})

t.test('addressPartOf: the address part a spelling stands for', async (t) => {
  t.equal(addressPartOf('address.city'), 'city')
  t.equal(addressPartOf('address.state'), 'state')
  t.equal(addressPartOf('address.postalCode'), 'postalCode')
  t.equal(addressPartOf('address.country'), 'country')
  t.equal(addressPartOf('email'), undefined)
  t.equal(addressPartOf('address'), undefined)
})
