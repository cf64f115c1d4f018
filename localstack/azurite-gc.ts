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

/** What the fix uses of Azurite's MemoryExtentStore (azurite/dist/src/common/persistence). */
export interface MemoryExtentStoreShape {
  categoryName: string;
  chunks: { delete(category: string, id: string): boolean };
  metadataStore: { EXTENTS_COLLECTION?: unknown; db?: { getCollection(name: string): ExtentsCollection | null } };
}

interface ExtentsCollection {
  removeWhere(filter: (doc: { id?: unknown }) => boolean): void;
}

export type DeleteExtents = (this: MemoryExtentStoreShape, extents: Iterable<string>) => Promise<number>;

/** The store's Loki collection of extents, when the store is what the fix expects. */
function extentsCollection(store: MemoryExtentStoreShape): ExtentsCollection | undefined {
  const metadata = store.metadataStore as Partial<MemoryExtentStoreShape['metadataStore']> | undefined;
  const name = metadata?.EXTENTS_COLLECTION;
  if (typeof name !== 'string' || typeof metadata?.db?.getCollection !== 'function') return undefined;
  if (typeof (store.chunks as Partial<MemoryExtentStoreShape['chunks']> | undefined)?.delete !== 'function')
    return undefined;
  const collection = metadata.db.getCollection(name);
  return typeof collection?.removeWhere === 'function' ? collection : undefined;
}

/**
 * Replaces `deleteExtents` on MemoryExtentStore's prototype. Like Azurite's, it deletes each
 * extent's chunks and metadata row and returns how many extents it was given; unlike it, the rows
 * go in one Loki batch (`removeWhere`: one index rebuild, not one per extent).
 */
export function batchExtentDeletes(proto: { deleteExtents: DeleteExtents }): void {
  const azurites = proto.deleteExtents;
  proto.deleteExtents = function (this: MemoryExtentStoreShape, extents: Iterable<string>): Promise<number> {
    const collection = extentsCollection(this);
    if (!collection) return azurites.call(this, extents);
    const ids = new Set<string>();
    let count = 0;
    for (const id of extents) {
      ids.add(id);
      count++;
    }
    for (const id of ids) this.chunks.delete(this.categoryName, id);
    if (ids.size > 0) collection.removeWhere((doc) => typeof doc.id === 'string' && ids.has(doc.id));
    return Promise.resolve(count);
  };
}
