/**
 * Azurite's launcher in the local stack: LocalAzurite runs `node build/localstack/azurite-main.js
 * <Azurite's arguments>`, which is Azurite itself with its extent GC's deletions batched
 * (azurite-gc.ts), and says so on stdout before Azurite starts.
 */
import { createRequire } from 'node:module';

import { batchExtentDeletes, type DeleteExtents } from './azurite-gc';

/** The line the launcher prints once the fix is in place (LocalAzurite looks for it). */
export const GC_FIX_APPLIED = 'local stack: Azurite extent GC deletes in batches';

const load = createRequire(__filename);

function main(): void {
  const store = load('azurite/dist/src/common/persistence/MemoryExtentStore') as {
    default?: { prototype?: { deleteExtents?: unknown } };
  };
  const proto = store.default?.prototype;
  if (proto && typeof proto.deleteExtents === 'function') {
    batchExtentDeletes(proto as { deleteExtents: DeleteExtents });
    process.stdout.write(`${GC_FIX_APPLIED}\n`);
  } else {
    process.stderr.write(
      'local stack: Azurite has no MemoryExtentStore.deleteExtents where localstack/azurite-gc.ts expects it; its GC runs unchanged and may stall Azurite after thousands of queue messages\n',
    );
  }
  // Azurite reads its arguments from process.argv after the script's path, as when it is run itself.
  load('azurite/dist/src/azurite.js');
}

if (require.main === module) main();
