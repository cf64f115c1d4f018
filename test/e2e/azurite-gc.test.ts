/**
 * The local stack's fix of Azurite's extent GC (localstack/azurite-gc.ts), against Azurite's own
 * classes: a sweep deletes the same extents as Azurite's code would, with one rebuild of the
 * extents index instead of one per extent; and the stack's Azurite runs with it.
 */
import { randomUUID } from 'node:crypto';
import { rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';

import { describe, expect, it } from 'vitest';

import { LocalAzurite } from '../../localstack/azurite';
import { batchExtentDeletes } from '../../localstack/azurite-gc';

const load = createRequire(__filename);

interface Store {
  init(): Promise<void>;
  appendExtent(data: Buffer): Promise<{ id: string; count: number }>;
  readExtent(chunk: { id: string; offset: number; count: number }): Promise<NodeJS.ReadableStream>;
  deleteExtents(extents: Iterable<string>): Promise<number>;
  chunks: { get(category: string, id: string): unknown };
}
type StoreClass = new (
  category: string,
  chunks: unknown,
  metadata: unknown,
  logger: unknown,
  makeError: (status: number, code: string, message: string) => Error,
) => Store;
interface Collection {
  count(): number;
  findOne(query: { id: string }): unknown;
  ensureAllIndexes(force?: boolean): void;
}

const memory = load('azurite/dist/src/common/persistence/MemoryExtentStore') as {
  default: StoreClass;
  MemoryExtentChunkStore: new (limit?: number) => unknown;
};
const Metadata = (
  load('azurite/dist/src/common/persistence/LokiExtentMetadataStore') as {
    default: new (
      path: string,
      inMemory: boolean,
    ) => { db: { getCollection(name: string): Collection }; EXTENTS_COLLECTION: string };
  }
).default;

/** Azurite's store with the fix, beside Azurite's own (the fix goes on this subclass only). */
class FixedStore extends memory.default {}
batchExtentDeletes(FixedStore.prototype);

const quiet = {
  info: () => undefined,
  debug: () => undefined,
  warn: () => undefined,
  error: () => undefined,
  verbose: () => undefined,
};

async function storeWith(Class: StoreClass, n: number) {
  const metadata = new Metadata(path.join(os.tmpdir(), `inboxq-no-such-db-${randomUUID()}`), true);
  const store = new Class('queue', new memory.MemoryExtentChunkStore(), metadata, quiet, (_s, _c, m) => new Error(m));
  await store.init();
  const extents: { id: string; count: number }[] = [];
  for (let i = 0; i < n; i++) extents.push(await store.appendExtent(Buffer.from(`message ${i}`)));
  const collection = metadata.db.getCollection(metadata.EXTENTS_COLLECTION);
  let rebuilds = 0;
  const rebuild = collection.ensureAllIndexes.bind(collection);
  collection.ensureAllIndexes = (force?: boolean) => {
    rebuilds++;
    rebuild(force);
  };
  return { store, extents, collection, rebuilds: () => rebuilds };
}

async function text(store: Store, extent: { id: string; count: number }): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of await store.readExtent({ ...extent, offset: 0 })) chunks.push(Buffer.from(c as Buffer));
  return Buffer.concat(chunks).toString();
}

describe("Azurite's extent GC with the fix", () => {
  it("deletes the very extents Azurite's own code deletes, and keeps the rest readable", async () => {
    const own = await storeWith(memory.default, 300);
    const fixed = await storeWith(FixedStore, 300);
    const swept = (e: { id: string }[]) => new Set(e.filter((_, i) => i % 3 === 0).map((x) => x.id));

    expect(await own.store.deleteExtents(swept(own.extents))).toBe(100);
    expect(await fixed.store.deleteExtents(swept(fixed.extents))).toBe(100);

    for (const side of [own, fixed]) {
      expect(side.collection.count()).toBe(200);
      for (const [i, extent] of side.extents.entries()) {
        const gone = i % 3 === 0;
        expect(side.store.chunks.get('queue', extent.id) === undefined).toBe(gone);
        expect(side.collection.findOne({ id: extent.id }) === null).toBe(gone);
        if (!gone) expect(await text(side.store, extent)).toBe(`message ${i}`);
      }
    }
  });

  it('rebuilds the extents index once per sweep, where Azurite rebuilds it for every extent', async () => {
    const own = await storeWith(memory.default, 300);
    const fixed = await storeWith(FixedStore, 300);
    await own.store.deleteExtents(new Set(own.extents.slice(0, 100).map((e) => e.id)));
    await fixed.store.deleteExtents(new Set(fixed.extents.slice(0, 100).map((e) => e.id)));
    // Each rebuild sorts every extent: n of them per sweep of n extents is what froze Azurite.
    expect(own.rebuilds()).toBe(100);
    expect(fixed.rebuilds()).toBe(1);
    expect(fixed.collection.count()).toBe(200);
  });

  it('counts what it was given, an unknown extent and a sweep of nothing included', async () => {
    const fixed = await storeWith(FixedStore, 3);
    expect(await fixed.store.deleteExtents([])).toBe(0);
    expect(fixed.rebuilds()).toBe(0);
    expect(await fixed.store.deleteExtents([fixed.extents[0]!.id, 'no-such-extent'])).toBe(2);
    expect(fixed.collection.count()).toBe(2);
  });

  it("leaves a store it does not recognise to Azurite's own code", async () => {
    const calls: string[][] = [];
    const proto = {
      deleteExtents(this: unknown, extents: Iterable<string>) {
        calls.push([...extents]);
        return Promise.resolve(-1);
      },
    };
    batchExtentDeletes(proto);
    const unlike = { categoryName: 'queue', chunks: { delete: () => true }, metadataStore: {} };
    expect(await proto.deleteExtents.call(unlike, ['a', 'b'])).toBe(-1);
    expect(calls).toEqual([['a', 'b']]);
  });

  it("is in the local stack's Azurite", async () => {
    const dir = path.join(os.tmpdir(), `inboxq-azurite-${randomUUID()}`);
    const azurite = new LocalAzurite(dir);
    try {
      await azurite.start();
      expect(azurite.gcFixApplied).toBe(true);
    } finally {
      await azurite.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
