/** Blob Storage for raw mail, large bodies and attachments. Names are deterministic, so a retried write overwrites the same blob. */
import { createHash } from 'node:crypto';
import { Transform, type Readable } from 'node:stream';
import type { BlobRef } from '../contract/messages';
import { storageError, type StorageClients } from './clients';

export class BlobStore {
  constructor(
    private readonly storage: StorageClients,
    private readonly container: string,
    private readonly mailbox?: string,
  ) {}

  async put(name: string, data: Buffer | string, contentType: string): Promise<BlobRef> {
    const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
    const sha256 = createHash('sha256').update(bytes).digest('hex');
    const container = await this.storage.container(this.container);
    try {
      await container.getBlockBlobClient(name).uploadData(bytes, {
        blobHTTPHeaders: { blobContentType: contentType },
        metadata: { sha256 },
      });
    } catch (err) {
      throw storageError(`Can't write blob ${this.container}/${name}`, err, this.mailbox);
    }
    return { container: this.container, name, size: bytes.length, sha256 };
  }

  /**
   * Streams into a block blob (4 MiB blocks, two in flight), hashing and counting on the way: a
   * 150 MB attachment costs a few blocks of memory, not its size.
   */
  async putStream(name: string, data: Readable, contentType: string): Promise<BlobRef> {
    const container = await this.storage.container(this.container);
    const hash = createHash('sha256');
    let size = 0;
    const meter = new Transform({
      transform(chunk: Buffer, _enc, done) {
        hash.update(chunk);
        size += chunk.length;
        done(null, chunk);
      },
    });
    data.on('error', (err) => meter.destroy(err));
    try {
      await container.getBlockBlobClient(name).uploadStream(data.pipe(meter), 4 * 1024 * 1024, 2, { blobHTTPHeaders: { blobContentType: contentType } });
    } catch (err) {
      throw storageError(`Can't write blob ${this.container}/${name}`, err, this.mailbox);
    }
    return { container: this.container, name, size, sha256: hash.digest('hex') };
  }

  /** A blob as a stream. */
  async getStream(name: string): Promise<Readable> {
    const container = await this.storage.container(this.container);
    try {
      const res = await container.getBlockBlobClient(name).download();
      return res.readableStreamBody as Readable;
    } catch (err) {
      throw storageError(`Can't read blob ${this.container}/${name}`, err, this.mailbox);
    }
  }

  /** Deletes every blob under a prefix (retention clean-up); returns how many. */
  async deletePrefix(prefix: string): Promise<number> {
    const container = await this.storage.container(this.container);
    let n = 0;
    try {
      for await (const blob of container.listBlobsFlat({ prefix })) {
        await container.deleteBlob(blob.name, { deleteSnapshots: 'include' });
        n++;
      }
    } catch (err) {
      throw storageError(`Can't delete blobs under ${this.container}/${prefix}`, err, this.mailbox);
    }
    return n;
  }

  async get(name: string): Promise<Buffer> {
    const container = await this.storage.container(this.container);
    try {
      return await container.getBlockBlobClient(name).downloadToBuffer();
    } catch (err) {
      throw storageError(`Can't read blob ${this.container}/${name}`, err, this.mailbox);
    }
  }
}

/**
 * A file name safe to use in a blob name and to hand to a worker: no directories (`../`), no
 * control characters, no leading dots, at most 120 characters, never empty.
 */
export function sanitizeFilename(name: string | undefined, fallback: string): string {
  const base = (name ?? '').split(/[\\/]/).pop() ?? '';
  const cleaned = base
    .normalize('NFC')
    .replace(/[\u0000-\u001f\u007f<>:"|?*]/g, '_')
    .replace(/^[.\s]+/, '')
    .trim()
    .slice(-120);
  return cleaned || fallback;
}
