import { writeFileSync } from 'node:fs'
import { openapiDocument, OPENAPI_PATH } from './openapi-document.js'

// `npm run openapi`: regenerate openapi/openapi.json from the routes' schemas.
writeFileSync(OPENAPI_PATH, await openapiDocument())
console.log(`wrote ${OPENAPI_PATH.pathname}`)
