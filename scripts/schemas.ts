/** Writes schemas/*.json from the zod schemas in shared/contract: `npm run schemas`. */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

import { contractJsonSchemas } from '../shared/contract/json-schema';

const dir = path.join(__dirname, '..', '..', 'schemas');
mkdirSync(dir, { recursive: true });
for (const [name, schema] of Object.entries(contractJsonSchemas())) {
  writeFileSync(path.join(dir, name), `${JSON.stringify(schema, null, 2)}\n`);
  console.log(`wrote schemas/${name}`);
}
