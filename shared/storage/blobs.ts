/** Blob Storage for raw mail, large bodies and attachments. Names are deterministic, so a retried write overwrites the same blob. */
import { createHash } from 'node:crypto';
import { Readable, Transform } from 'node:stream';

import contentType from 'content-type';

import type { BlobRef } from '../contract/messages';
import { type StorageClients, storageError } from './clients';

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
      await container
        .getBlockBlobClient(name)
        .uploadStream(data.pipe(meter), 4 * 1024 * 1024, 2, { blobHTTPHeaders: { blobContentType: contentType } });
    } catch (err) {
      throw storageError(`Can't write blob ${this.container}/${name}`, err, this.mailbox);
    }
    return { container: this.container, name, size, sha256: hash.digest('hex') };
  }

  /** The blob's size; throws a StorageError naming it when it is not there (or can't be read). */
  async size(name: string): Promise<number> {
    const container = await this.storage.container(this.container);
    try {
      return (await container.getBlockBlobClient(name).getProperties()).contentLength ?? 0;
    } catch (err) {
      throw storageError(`Can't read blob ${this.container}/${name}`, err, this.mailbox);
    }
  }

  /**
   * The blob as a byte stream that starts downloading only when it is first read, and stops (its
   * download closed) when it is destroyed: a mail can carry it without holding it in memory.
   */
  lazyStream(name: string): Readable {
    const open = () => this.getStream(name);
    return Readable.from(
      (async function* () {
        // An early end of the consumer ends this loop, which destroys the download.
        for await (const chunk of await open()) yield chunk as Buffer;
      })(),
      { objectMode: false },
    );
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

  /** True when at least one blob's name starts with the prefix (one listing of one name). */
  async hasAny(prefix: string): Promise<boolean> {
    const container = await this.storage.container(this.container);
    try {
      const page = await container.listBlobsFlat({ prefix }).byPage({ maxPageSize: 1 }).next();
      return !page.done && page.value.segment.blobItems.length > 0;
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode === 404) return false;
      throw storageError(`Can't list blobs under ${this.container}/${prefix}`, err, this.mailbox);
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

/** Code points a file name never keeps: bidi marks, overrides and isolates, zero-width and other invisible formatting. */
const INVISIBLE = /[\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]/gu;
/** Code points a file name shows as `_`: controls (C0, C1) and what Windows forbids. */
// eslint-disable-next-line no-control-regex -- control characters are what this pattern is for
const FORBIDDEN = /[\u0000-\u001f\u007f-\u009f<>:"|?*]/gu;
/** Names Windows reserves for devices, with any extension ("CON.txt" opens the console). */
const RESERVED = /^(con|prn|aux|nul|com[0-9\u00b9\u00b2\u00b3]|lpt[0-9\u00b9\u00b2\u00b3]|conin\$|conout\$)(\.|$)/i;
/** Length of a file name, in code points. */
export const MAX_FILENAME_CODE_POINTS = 120;

/**
 * A file name safe to use in a blob name and to hand to a worker, cleaned code point by code point:
 * well-formed UTF-16 (a lone surrogate becomes U+FFFD, a pair is never cut), no directories (`../`),
 * no control, bidi or zero-width characters, none of `<>:"|?*`, no leading dots or spaces, no
 * trailing dots or spaces, no Windows device name, at most 120 code points with the extension
 * kept, never empty. Linear in the name's length.
 */
export function sanitizeFilename(name: string | undefined, fallback: string): string {
  const base = (name ?? '').toWellFormed().split(/[\\/]/).pop() ?? '';
  let cleaned = base
    .normalize('NFC')
    .replace(INVISIBLE, '')
    .replace(FORBIDDEN, '_')
    .replace(/^[.\s]+/, '');
  cleaned = trimEndDotsAndSpaces(cleaned);
  const points = Array.from(cleaned);
  if (points.length > MAX_FILENAME_CODE_POINTS) {
    const dot = cleaned.lastIndexOf('.');
    const ext = dot > 0 ? Array.from(cleaned.slice(dot)) : [];
    const keptExt = ext.length > 1 && ext.length <= 16 ? ext : [];
    cleaned = trimEndDotsAndSpaces(
      [...points.slice(0, MAX_FILENAME_CODE_POINTS - keptExt.length), ...keptExt].join(''),
    );
  }
  if (RESERVED.test(cleaned)) cleaned = `_${cleaned}`;
  return cleaned || fallback;
}

/** Without trailing dots and white space (Windows drops them, so "a.txt." would become another file's name). */
function trimEndDotsAndSpaces(s: string): string {
  let end = s.length;
  while (end > 0 && (s[end - 1] === '.' || /\s/.test(s[end - 1]!))) end--;
  return s.slice(0, end);
}

/**
 * A content type fit for an HTTP header and a worker: the media type (and a charset) as the
 * `content-type` package parses and formats it, printable ASCII only; anything it refuses is
 * `application/octet-stream`.
 */
export function safeContentType(value: string | undefined): string {
  const fallback = 'application/octet-stream';
  if (!value || value.length > 1000) return fallback;
  try {
    let parsed: contentType.ParsedMediaType;
    try {
      parsed = contentType.parse(value);
    } catch {
      // Parameters the parser refuses: keep the media type alone.
      parsed = { type: contentType.parse(value.split(';')[0]!.trim()).type, parameters: {} };
    }
    const charset = parsed.parameters['charset'];
    const out = contentType.format({
      type: parsed.type,
      parameters: charset && /^[A-Za-z0-9._:-]{1,40}$/.test(charset) ? { charset } : {},
    });
    return /^[\x21-\x7e]+(; charset=[\x21-\x7e]+)?$/.test(out) && out.length <= 255 ? out : fallback;
  } catch {
    return fallback;
  }
}
