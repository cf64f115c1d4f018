/** Parses a raw message with mailparser into what the drain needs. */
import { isUtf8 } from 'node:buffer';
import type { Readable } from 'node:stream';

import { Headers, MimeNode } from '@zone-eu/mailsplit';
import { decode as decodeQuotedPrintable } from 'libqp';
import { type AddressObject, type AttachmentStream, MailParser, type MessageText, simpleParser } from 'mailparser';

import { InboxqError } from '../errors';
import { readThreadIndex } from './thread-index';

/** MIME parts a mail may have (mailsplit's default is 1,000; a mail with 1,000 attachments is legitimate). */
export const MAX_MIME_PARTS = 5000;
/**
 * HTML longer than this (characters) is not converted to text: mailparser's converter took 1 s on
 * 1 MB and 68 s on 4 MB of one crafted table row. The HTML itself is kept for the worker.
 */
export const MAX_HTML_TO_TEXT = 256 * 1024;

const PARSER_OPTIONS = {
  skipImageLinks: true,
  skipTextToHtml: true,
  skipTextLinks: true,
  maxChildNodes: MAX_MIME_PARTS,
  maxHtmlLengthToParse: MAX_HTML_TO_TEXT,
} as Parameters<typeof simpleParser>[1];

export interface ParsedAttachment {
  filename: string | undefined;
  contentType: string;
  content: Buffer;
}

/** What the verdict, the ledger and the task need of a mail's header section. */
/** One header field of a mail, as the sender checks read it. */
export interface HeaderLine {
  /** Lower-cased field name. */
  key: string;
  /** The whole raw field as in the message, `Name: value`, possibly folded. */
  line: string;
}

export interface ParsedHeader {
  headerLines: HeaderLine[];
  messageId: string | null;
  inReplyTo: string | null;
  references: string[];
  /** The Thread-Index (Outlook's conversation index) as base64, when it is a valid one; else null. */
  threadIndex: string | null;
  subject: string;
  fromName: string;
  to: string[];
  cc: string[];
  date: Date | undefined;
}

/** A mail's body: its text, its HTML, its attachments. */
export interface ParsedBody {
  text: string;
  /** The text's UTF-8 encoding, when the parser had it at hand (else it is encoded when stored). */
  textBytes?: Buffer;
  html: string | null;
  attachments: ParsedAttachment[];
}

function addresses(value: AddressObject | AddressObject[] | undefined): string[] {
  if (!value) return [];
  const list = Array.isArray(value) ? value : [value];
  return list.flatMap((a) => a.value.map((v) => v.address ?? '').filter(Boolean));
}

/** A msg-id can't be folded, so it fits one header line: anything longer is not a Message-ID. */
export const MAX_MESSAGE_ID_CHARS = 998;

/** Message-IDs as `<id>`; tolerant of missing brackets; null for none, or one longer than a header line. */
export function normalizeMessageId(id: string | undefined | null): string | null {
  if (!id) return null;
  const trimmed = id.trim();
  if (!trimmed || trimmed.length > MAX_MESSAGE_ID_CHARS) return null;
  return trimmed.startsWith('<') ? trimmed : `<${trimmed}>`;
}

/**
 * mailparser's own header decoding (the `processHeaders` of a MailParser that never parses a
 * stream), applied to the lines mailsplit's `Headers` splits a header section into: the very pieces
 * `simpleParser` runs, without the cost of a parsing stream per mail (as much as parsing a small
 * mail whole). Linear in the header section's size.
 */
const headerDecoder = new MailParser(PARSER_OPTIONS as ConstructorParameters<typeof MailParser>[0]) as unknown as {
  processHeaders(lines: HeaderLine[]): Map<string, unknown>;
};

/** A header's text as mailparser decoded it: the first, when the field is repeated. */
function headerText(value: unknown): string | undefined {
  const first: unknown = Array.isArray(value) ? value[0] : value;
  return typeof first === 'string' ? first : undefined;
}

/** Parses a header section (only: anything after its empty line is ignored). */
export function parseHeader(source: Buffer): ParsedHeader {
  const lines = (new Headers(headerSection(source)).getList() as HeaderLine[]).map((h) => ({
    key: h.key.toLowerCase(),
    line: h.line,
  }));
  const headers = headerDecoder.processHeaders(lines);
  const get = <T>(key: string): T | undefined => headers.get(key) as T | undefined;
  const refs = get<string | string[]>('references');
  const list = refs === undefined ? [] : Array.isArray(refs) ? refs : [refs];
  const from = get<AddressObject>('from');
  const date = get<Date>('date');
  return {
    headerLines: lines,
    messageId: normalizeMessageId(get<string>('message-id')),
    inReplyTo: normalizeMessageId(get<string>('in-reply-to')),
    references: list.map((r) => normalizeMessageId(r)).filter((r): r is string => r !== null),
    threadIndex: readThreadIndex(headerText(get<unknown>('thread-index')))?.toString('base64') ?? null,
    subject: get<string>('subject') ?? '',
    fromName: from?.value[0]?.name ?? '',
    to: addresses(get<AddressObject>('to')),
    cc: addresses(get<AddressObject>('cc')),
    date: date instanceof Date ? date : undefined,
  };
}

/**
 * Parses a whole (small) mail's body, within bounds: at most MAX_MIME_PARTS parts, and HTML turned
 * into text only up to MAX_HTML_TO_TEXT characters (mailparser's HTML-to-text is superlinear on
 * crafted tables; past the bound the HTML is kept and the text left empty). Throws MailParseError.
 */
export async function parseBody(source: Buffer): Promise<ParsedBody> {
  const plain = plainTextBody(source);
  return plain ? { ...plain, html: null, attachments: [] } : parseWithMailparser(source);
}

/** Any mail, by mailparser's simpleParser: what parseBody does for all but a plain text mail. */
export async function parseWithMailparser(source: Buffer): Promise<ParsedBody> {
  let parsed;
  try {
    parsed = await simpleParser(source, PARSER_OPTIONS);
  } catch (err) {
    throw new MailParseError(err instanceof Error ? err.message.slice(0, 200) : 'the parser failed');
  }
  return {
    text: parsed.text ?? '',
    html: typeof parsed.html === 'string' ? parsed.html : null,
    attachments: parsed.attachments.map((a) => ({
      filename: a.filename,
      contentType: a.contentType || 'application/octet-stream',
      content: a.content,
    })),
  };
}

/** The fast path reads header sections up to this size; a longer one goes through mailparser. */
export const PLAIN_HEADER_LIMIT = 16 * 1024;

/** Transfer encodings that leave the body's bytes as they are (mailsplit's PassThrough). */
const IDENTITY_ENCODINGS = ['', '7bit', '8bit', 'binary'];

/**
 * The text of a single-part text/plain mail in UTF-8 or ASCII, with an identity or a
 * quoted-printable transfer encoding, exactly as mailparser gives it (the body's bytes, decoded
 * from quoted-printable by libqp, decoded as UTF-8, line ends as LF), with its UTF-8 bytes when they
 * are valid UTF-8; null for any other mail, which mailparser parses. Such a mail is most plain
 * mail; streaming its body through the splitter line by line was a third of the CPU a 1 MB mail
 * cost.
 *
 * The header is read by mailsplit's own MimeNode, as the splitter inside mailparser reads it, and
 * the header section ends where the splitter ends it: at the first line that is empty (LF or CRLF
 * alone). Every condition mirrors mailparser 3.14 (createNode, processChunk) and mailsplit 5.4
 * (parseHeaders, getDecoder). libqp's streaming Decoder, which mailsplit uses, gathers the whole
 * body and runs libqp's decode on it once: decoding it here is the same call. (libbase64's Decoder
 * decodes chunk by chunk, so base64 text is left to mailparser.) test/unit/plain-text.test.ts
 * compares the two on generated mail. Linear in the mail's size.
 */
export function plainTextBody(source: Buffer): { text: string; textBytes?: Buffer } | null {
  const end = splitterHeaderEnd(source, PLAIN_HEADER_LIMIT);
  if (end < 0) return null;
  const node = new MimeNode(false, PARSER_OPTIONS as ConstructorParameters<typeof MimeNode>[1]);
  node.addHeaderChunk(source.subarray(0, end));
  node.parseHeaders();
  if (node.contentType !== 'text/plain' || node.flowed) return null;
  if (node.disposition && node.disposition !== 'inline') return null;
  const encoding = node.encoding || '';
  const quotedPrintable = encoding === 'quoted-printable';
  if (!quotedPrintable && !IDENTITY_ENCODINGS.includes(encoding)) return null;
  const charset = (node.charset || 'utf-8').toLowerCase().replace(/[^a-z0-9]+/g, '');
  if (!['ascii', 'usascii', 'utf8'].includes(charset)) return null;
  // mailparser decodes the transfer encoding, then UTF-8, then replaces /\r?\n/g with LF. Dropping
  // each CR that precedes an LF from the transfer-decoded bytes, before the UTF-8 decode, gives the
  // same string: CR and LF are ASCII, which UTF-8 never takes into a sequence, valid or not. (Not
  // before the quoted-printable decode: =0D=0A is a line end only once decoded.) It is also one
  // flat string (a replace on a long one is not) and, for valid UTF-8, the very bytes the text is
  // stored as.
  const body = source.subarray(end);
  const bytes = withoutCrBeforeLf(quotedPrintable ? decodeQuotedPrintable(body) : body);
  const text = bytes.toString('utf8');
  return isUtf8(bytes) ? { text, textBytes: bytes } : { text };
}

/** Segments shorter than this are copied byte by byte: a native copy per short line costs more. */
const SHORT_SEGMENT = 64;

/** The bytes without the CR of each CR LF; the same buffer when there is none. Linear. */
export function withoutCrBeforeLf(bytes: Buffer): Buffer {
  const crlf = (lf: number) => lf > 0 && bytes[lf - 1] === 0x0d;
  let lf = bytes.indexOf(0x0a);
  while (lf >= 0 && !crlf(lf)) lf = bytes.indexOf(0x0a, lf + 1);
  if (lf < 0) return bytes;
  const out = Buffer.allocUnsafe(bytes.length);
  let o = 0;
  let from = 0;
  for (; lf >= 0; lf = bytes.indexOf(0x0a, lf + 1)) {
    if (!crlf(lf)) continue;
    const cr = lf - 1;
    if (cr - from >= SHORT_SEGMENT) o += bytes.copy(out, o, from, cr);
    else for (let k = from; k < cr; k++) out[o++] = bytes[k]!;
    from = lf;
  }
  o += bytes.copy(out, o, from);
  return out.subarray(0, o);
}

/**
 * Where mailsplit's splitter ends a header section: after the first line (lines end at LF) that is
 * empty or a lone CR LF. -1 when there is none within `limit` bytes.
 */
function splitterHeaderEnd(source: Buffer, limit: number): number {
  const head = source.subarray(0, limit);
  let lineStart = 0;
  for (let i = head.indexOf(0x0a); i >= 0; i = head.indexOf(0x0a, i + 1)) {
    const length = i - lineStart;
    if (length === 0 || (length === 1 && source[lineStart] === 0x0d)) return i + 1;
    lineStart = i + 1;
  }
  return -1;
}

/** The header section of a whole message: up to and including the empty line, as IMAP's BODY[HEADER]. */
export function headerSection(source: Buffer): Buffer {
  const crlf = source.indexOf('\r\n\r\n');
  const lf = source.indexOf('\n\n');
  const end = crlf >= 0 && (lf < 0 || crlf < lf) ? crlf + 4 : lf >= 0 ? lf + 2 : source.length;
  return source.subarray(0, end);
}

/**
 * Why a message is not a mail at all, or undefined when it is one. mailparser accepts anything
 * (0 bytes, random binary) and returns empty fields; such input is set aside for a person instead
 * of being judged as if it had a sender.
 */
export function structuralProblem(source: Buffer, totalSize = source.length): string | undefined {
  if (totalSize === 0) return 'the message is empty (0 bytes)';
  if (source.length === 0) return 'the message has no header section';
  const head = source.subarray(0, Math.min(source.length, 1000)).toString('latin1');
  // RFC 5322: a message starts with a header field, `name:` with printable ASCII except ':'.
  if (!/^[\x21-\x39\x3b-\x7e]+[ \t]*:/.test(head)) return 'the message does not start with a header section';
  return undefined;
}

/** The body of a mail can't be parsed (too many parts, a structure the parser refuses). Only that mail is affected. */
export class MailParseError extends InboxqError {
  override readonly code = 'MAIL_PARSE';
}

export interface StreamedAttachment {
  index: number;
  filename: string | undefined;
  contentType: string;
  content: Readable;
}

export interface StreamedBody<A> {
  text: string;
  html: string | null;
  attachments: A[];
}

/**
 * Parses a whole message from a stream. Attachments are handed to `onAttachment` one at a time as
 * streams, and the parser waits until each is consumed, so only the text parts stay in memory.
 */
export function parseStream<A>(
  source: Readable,
  onAttachment: (a: StreamedAttachment) => Promise<A>,
): Promise<StreamedBody<A>> {
  return new Promise((resolve, reject) => {
    const parser = new MailParser(PARSER_OPTIONS as ConstructorParameters<typeof MailParser>[0]);
    const attachments: A[] = [];
    let text = '';
    let html: string | null = null;
    let index = 0;
    let failed = false;
    let pending: Promise<void> = Promise.resolve();
    const fail = (err: unknown) => {
      if (failed) return;
      failed = true;
      source.destroy();
      parser.destroy();
      reject(err instanceof Error ? err : new MailParseError(String(err)));
    };
    parser.on('data', (data: AttachmentStream | MessageText) => {
      if (data.type === 'attachment') {
        const attachment = data;
        const i = index++;
        pending = pending
          .then(() =>
            onAttachment({
              index: i,
              filename: attachment.filename,
              contentType: attachment.contentType || 'application/octet-stream',
              content: attachment.content,
            }),
          )
          .then((ref) => {
            attachments.push(ref);
            attachment.release?.();
          })
          .catch(fail);
      } else {
        text = data.text ?? '';
        html = typeof data.html === 'string' ? data.html : null;
      }
    });
    parser.on('end', () => {
      pending.then(() => {
        if (!failed) resolve({ text, html, attachments });
      }, fail);
    });
    parser.on('error', (err: Error) => fail(new MailParseError(err.message)));
    source.on('error', fail);
    source.pipe(parser);
  });
}
