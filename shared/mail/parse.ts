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
