/** Blob Storage for raw mail, large bodies and attachments. Names are deterministic, so a retried write overwrites the same blob. */
import { createHash } from 'node:crypto';
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
