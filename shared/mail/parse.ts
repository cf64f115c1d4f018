/** Parses a raw message with mailparser into what the drain needs. */
import { simpleParser, type AddressObject } from 'mailparser';
import type { HeaderLine } from '../sender/policy';

export interface ParsedAttachment {
  filename: string | undefined;
  contentType: string;
  content: Buffer;
}

export interface ParsedMail {
  headerLines: HeaderLine[];
  messageId: string | null;
  inReplyTo: string | null;
  references: string[];
  subject: string;
  fromName: string;
  to: string[];
  cc: string[];
  date: Date | undefined;
  text: string;
  html: string | null;
  attachments: ParsedAttachment[];
}

function addresses(value: AddressObject | AddressObject[] | undefined): string[] {
  if (!value) return [];
  const list = Array.isArray(value) ? value : [value];
  return list.flatMap((a) => a.value.map((v) => v.address ?? '').filter(Boolean));
}

/** Message-IDs as `<id>`; tolerant of missing brackets. */
export function normalizeMessageId(id: string | undefined | null): string | null {
  if (!id) return null;
  const trimmed = id.trim();
  if (!trimmed) return null;
  return trimmed.startsWith('<') ? trimmed : `<${trimmed}>`;
}

export async function parseMail(source: Buffer): Promise<ParsedMail> {
  const parsed = await simpleParser(source, { skipImageLinks: true, skipTextToHtml: true, skipTextLinks: true });
  const refs = parsed.references === undefined ? [] : Array.isArray(parsed.references) ? parsed.references : [parsed.references];
  const fromName = parsed.from?.value[0]?.name ?? '';
  return {
    headerLines: parsed.headerLines.map((h) => ({ key: h.key.toLowerCase(), line: h.line })),
    messageId: normalizeMessageId(parsed.messageId),
    inReplyTo: normalizeMessageId(parsed.inReplyTo),
    references: refs.map((r) => normalizeMessageId(r)).filter((r): r is string => r !== null),
    subject: parsed.subject ?? '',
    fromName,
    to: addresses(parsed.to),
    cc: addresses(parsed.cc),
    date: parsed.date,
    text: parsed.text ?? '',
    html: typeof parsed.html === 'string' ? parsed.html : null,
    attachments: parsed.attachments.map((a) => ({
      filename: a.filename,
      contentType: a.contentType || 'application/octet-stream',
      content: a.content,
    })),
  };
}

/**
 * Why a message is not a mail at all, or undefined when it is one. mailparser accepts anything
 * (0 bytes, random binary) and returns empty fields; such input is set aside for a person instead
 * of being judged as if it had a sender.
 */
export function structuralProblem(source: Buffer): string | undefined {
  if (source.length === 0) return 'the message is empty (0 bytes)';
  const head = source.subarray(0, Math.min(source.length, 1000)).toString('latin1');
  // RFC 5322: a message starts with a header field, `name:` with printable ASCII except ':'.
  if (!/^[\x21-\x39\x3b-\x7e]+[ \t]*:/.test(head)) return 'the message does not start with a header section';
  return undefined;
}
