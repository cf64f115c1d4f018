/**
 * Thread-Index and Thread-Topic, the headers Outlook and Exchange group a conversation by
 * (PidTagConversationIndex and PidTagConversationTopic; [MS-OXOMSG] 2.2.1.3 and 2.2.1.5). inboxq
 * sets both on every mail it sends, so its answers stay in the sender's thread although their
 * subject carries a conversation tag the original did not.
 *
 * A Thread-Index is base64 of a 22-byte header block, then one 5-byte child block per reply:
 *
 *   header  0x01 | FILETIME bits 63..24 (5 bytes, big-endian) | conversation GUID (16 bytes)
 *   child   DC (1 bit) | time delta (31 bits) | random (4 bits) | sequence (4 bits)
 *
 * The child's time delta is the time since the header's, in units of 2^18 FILETIME ticks
 * (26.2 ms; DC 0) or, past 2^49 ticks (about 1.8 years), of 2^23 ticks (0.84 s; DC 1).
 * FILETIME counts 100 ns ticks since 1601-01-01 UTC.
 *
 * A sender writes the original's Thread-Index: it is read strictly (base64 of 22 + 5n bytes,
 * version byte 1, at most MAX_CHILD_BLOCKS children) and ignored otherwise.
 */
import { createHash } from 'node:crypto';

export const HEADER_BLOCK_BYTES = 22;
export const CHILD_BLOCK_BYTES = 5;
/** Longer chains than this (a thread of over 100 replies) are not extended: a new index is begun. */
export const MAX_CHILD_BLOCKS = 100;
/** What a Thread-Topic keeps of a subject (characters). */
export const MAX_THREAD_TOPIC_CHARS = 255;

/** FILETIME of the Unix epoch: 100 ns ticks from 1601-01-01 to 1970-01-01. */
const EPOCH_FILETIME = 116_444_736_000_000_000n;
const TICKS_PER_MS = 10_000n;
const SMALL_DELTA_SHIFT = 18n;
const LARGE_DELTA_SHIFT = 23n;
const SMALL_DELTA_LIMIT = 1n << 49n;
const MAX_DELTA = 0x7fff_ffffn;

export function toFiletime(at: Date): bigint {
  return BigInt(at.getTime()) * TICKS_PER_MS + EPOCH_FILETIME;
}

export function fromFiletime(filetime: bigint): Date {
  return new Date(Number((filetime - EPOCH_FILETIME) / TICKS_PER_MS));
}

export interface ChildBlock {
  /** The delta code: 0 for the finer unit (2^18 ticks), 1 for the coarser (2^23). */
  dc: 0 | 1;
  /** The time since the header block's, in ticks (already multiplied by the unit). */
  deltaTicks: bigint;
  random: number;
  sequence: number;
}

export interface DecodedThreadIndex {
  /** The header block's time (FILETIME with its low 24 bits zero: a 1.68 s resolution). */
  time: Date;
  /** The conversation GUID, 32 hex digits. */
  guid: string;
  children: ChildBlock[];
}

const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/**
 * A Thread-Index header value as bytes, or null when it is not one: base64 (whitespace from
 * folding allowed) of 22 + 5n bytes, n at most MAX_CHILD_BLOCKS, its first byte 1. Bounded: a
 * value longer than the longest valid one is refused before it is decoded.
 */
export function readThreadIndex(value: string | undefined | null): Buffer | null {
  if (!value) return null;
  const maxChars = (Math.ceil((HEADER_BLOCK_BYTES + MAX_CHILD_BLOCKS * CHILD_BLOCK_BYTES) / 3) + 1) * 4;
  if (value.length > maxChars * 2) return null;
  const compact = value.replace(/\s+/g, '');
  if (compact.length > maxChars || compact.length % 4 !== 0 || !BASE64.test(compact)) return null;
  const bytes = Buffer.from(compact, 'base64');
  if (bytes.length < HEADER_BLOCK_BYTES || (bytes.length - HEADER_BLOCK_BYTES) % CHILD_BLOCK_BYTES !== 0) return null;
  if ((bytes.length - HEADER_BLOCK_BYTES) / CHILD_BLOCK_BYTES > MAX_CHILD_BLOCKS) return null;
  if (bytes[0] !== 0x01) return null;
  return bytes;
}

export function decodeThreadIndex(bytes: Buffer): DecodedThreadIndex {
  if (bytes.length < HEADER_BLOCK_BYTES || (bytes.length - HEADER_BLOCK_BYTES) % CHILD_BLOCK_BYTES !== 0)
    throw new RangeError(`a Thread-Index is 22 + 5n bytes, not ${bytes.length}`);
  const children: ChildBlock[] = [];
  for (let at = HEADER_BLOCK_BYTES; at < bytes.length; at += CHILD_BLOCK_BYTES) {
    const word = bytes.readUInt32BE(at);
    const dc = (word >>> 31) as 0 | 1;
    const delta = BigInt(word & 0x7fff_ffff);
    children.push({
      dc,
      deltaTicks: delta << (dc === 0 ? SMALL_DELTA_SHIFT : LARGE_DELTA_SHIFT),
      random: bytes[at + 4]! >>> 4,
      sequence: bytes[at + 4]! & 0x0f,
    });
  }
  return {
    time: fromFiletime(headerFiletime(bytes)),
    guid: bytes.subarray(6, HEADER_BLOCK_BYTES).toString('hex'),
    children,
  };
}

/** The header block's FILETIME: its 40 stored bits in place, the low 24 zero. */
function headerFiletime(bytes: Buffer): bigint {
  return BigInt(bytes.readUIntBE(1, 5)) << 24n;
}

/** A new Thread-Index (a header block only): the conversation begins at `at`, named by `guid`. */
export function newThreadIndex(at: Date, guid: Buffer): Buffer {
  if (guid.length !== 16) throw new RangeError('a conversation GUID is 16 bytes');
  const header = Buffer.alloc(HEADER_BLOCK_BYTES);
  header[0] = 0x01;
  header.writeUIntBE(Number((toFiletime(at) >> 24n) & 0xff_ffff_ffffn), 1, 5);
  guid.copy(header, 6);
  return header;
}

/**
 * `parent` extended by one child block for a reply made at `at`. `nibble` supplies the random and
 * sequence fields (its low 8 bits). A time before the header's counts as no time at all.
 */
export function childThreadIndex(parent: Buffer, at: Date, nibble: number): Buffer {
  let diff = toFiletime(at) - headerFiletime(parent);
  if (diff < 0n) diff = 0n;
  const dc = diff < SMALL_DELTA_LIMIT ? 0 : 1;
  let delta = diff >> (dc === 0 ? SMALL_DELTA_SHIFT : LARGE_DELTA_SHIFT);
  if (delta > MAX_DELTA) delta = MAX_DELTA;
  const child = Buffer.alloc(CHILD_BLOCK_BYTES);
  child.writeUInt32BE(((dc << 31) | Number(delta)) >>> 0, 0);
  child[4] = nibble & 0xff;
  return Buffer.concat([parent, child]);
}

/** Subject prefixes mail clients add, in the languages Outlook writes them (Re, Fw, AW, WG, SV, VS, …). */
const PREFIX = /^\s*(?:re|fwd?|aw|wg|sv|vs|antw|doorst|tr|rv|res|enc|odp|vb|vl)\s*(?:\[\d{1,4}\])?\s*[:：]\s*/i;
const TAG = /\s*\[#[0-9a-f]{24}\]/gi;
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g;

/**
 * The Thread-Topic of a subject: without its reply and forward prefixes and without inboxq's
 * conversation tags, whitespace collapsed, at most MAX_THREAD_TOPIC_CHARS. Linear: each prefix
 * match is anchored and consumes what it matched.
 */
export function threadTopic(subject: string): string {
  let topic = subject
    .slice(0, MAX_THREAD_TOPIC_CHARS * 4)
    .replace(CONTROL, ' ')
    .replace(TAG, '');
  for (let m = PREFIX.exec(topic); m && m[0].length > 0; m = PREFIX.exec(topic)) topic = topic.slice(m[0].length);
  return topic.replace(/\s+/g, ' ').trim().slice(0, MAX_THREAD_TOPIC_CHARS);
}

/**
 * The Thread-Index of a reply: the original's extended by a child block, or, when the original had
 * none (or one that can't be read), one begun for it (at its arrival, its GUID derived from
 * `threadKey`, so every reply to it lands in one conversation) and extended the same way.
 */
export function replyThreadIndex(
  original: string | null | undefined,
  options: { arrivedAt: Date; threadKey: string; replyKey: string; at: Date },
): string {
  const read = readThreadIndex(original);
  // A chain at its bound is not extended (the reply's index would be one no reader takes): begun anew.
  const parent =
    (read && read.length < HEADER_BLOCK_BYTES + MAX_CHILD_BLOCKS * CHILD_BLOCK_BYTES ? read : null) ??
    newThreadIndex(
      Number.isNaN(options.arrivedAt.getTime()) ? options.at : options.arrivedAt,
      createHash('sha256').update(`inboxq-thread:${options.threadKey}`).digest().subarray(0, 16),
    );
  const nibble = createHash('sha256').update(options.replyKey).digest()[0]!;
  return childThreadIndex(parent, options.at, nibble).toString('base64');
}
