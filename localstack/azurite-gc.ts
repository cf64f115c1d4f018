/**
 * A fix for Azurite's extent garbage collection, applied inside Azurite's process by its launcher
 * (azurite-main.ts) before Azurite starts.
 *
 * Azurite keeps each queue message and each blob's data as an extent. A mark-and-sweep GC (every
 * minute for queues, every ten for blobs) deletes the extents nothing refers to any more, one by
 * one. With `--inMemoryPersistence` each deletion is a Loki `findAndRemove` on the extents
 * collection, which rebuilds that collection's binary index (a sort of every extent) each time,
 * and the sweep never yields to the event loop. A sweep after n queue messages thus sorts n
 * entries n times, and Azurite answers no request meanwhile.
 *
 * Measured on this machine (Azurite 3.37.0, messages sent and cleared, the longest answer of a
 * probe after the next sweep): 2 s after 2,000 messages, 9.5 s after 4,000, 42 s after 8,000. The
 * benchmark's 26,000 froze Azurite for over ten minutes, until Dovecot ended the IMAP connection
 * of a drain that was waiting on Storage: the slow continued runs and the IMAP connections broken
 * after a large FETCH that issue 16 reported.
 *
 * The fix deletes a sweep's extents in one batch: the same chunks and the same metadata rows, with
 * one index rebuild. A store that is not what it expects (another Azurite version) is left to
 * Azurite's own code.
 */

/**
 * What the fix looks for on Azurite's MemoryExtentStore (azurite/dist/src/common/persistence). Any
 * of it may be missing from another Azurite version, so all of it is optional here.
 */
export interface MemoryExtentStoreShape {
  categoryName?: string;
  chunks?: { delete?(category: string, id: string): boolean };
  metadataStore?: { EXTENTS_COLLECTION?: unknown; db?: { getCollection?(name: string): ExtentsCollection | null } };
}

interface ExtentsCollection {
  removeWhere?(filter: (doc: { id?: unknown }) => boolean): void;
}

export type DeleteExtents = (this: MemoryExtentStoreShape, extents: Iterable<string>) => Promise<number>;

/** How to delete the store's extents in one batch, when the store is what the fix expects. */
function batchDeleter(store: MemoryExtentStoreShape): ((ids: Set<string>) => void) | undefined {
  const { chunks, categoryName, metadataStore } = store;
  const name = metadataStore?.EXTENTS_COLLECTION;
  if (typeof name !== 'string' || typeof categoryName !== 'string') return undefined;
  if (!chunks?.delete || !metadataStore?.db?.getCollection) return undefined;
  const collection = metadataStore.db.getCollection(name);
  if (!collection?.removeWhere) return undefined;
  return (ids) => {
    for (const id of ids) chunks.delete!(categoryName, id);
    if (ids.size > 0) collection.removeWhere!((doc) => typeof doc.id === 'string' && ids.has(doc.id));
  };
}

/**
 * Replaces `deleteExtents` on MemoryExtentStore's prototype. Like Azurite's, it deletes each
 * extent's chunks and metadata row and returns how many extents it was given; unlike it, the rows
 * go in one Loki batch (`removeWhere`: one index rebuild, not one per extent).
 */
export function batchExtentDeletes(proto: { deleteExtents: DeleteExtents }): void {
  const azurites = proto.deleteExtents;
  proto.deleteExtents = function (this: MemoryExtentStoreShape, extents: Iterable<string>): Promise<number> {
    const deleteAll = batchDeleter(this);
    if (!deleteAll) return azurites.call(this, extents);
    const ids = new Set<string>();
    let count = 0;
    for (const id of extents) {
      ids.add(id);
      count++;
    }
    deleteAll(ids);
    return Promise.resolve(count);
  };
}
