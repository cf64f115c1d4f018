/**
 * Test mail, built the way the messages arrive: headers as Exchange Online Protection (or another
 * MTA) writes them, then the sender's own headers, then the body.
 */
import { randomUUID } from 'node:crypto';

export interface MailOptions {
  from: string;
  to: string;
  subject?: string;
  body?: string;
  messageId?: string | null;
  /** The first (topmost) Authentication-Results header; `null` for none. Default: an EOP DMARC pass for the From domain. */
  authResults?: string | null;
  extraHeaders?: string[];
  attachments?: { filename: string; contentType: string; content: Buffer }[];
  inReplyTo?: string;
}

export function eopPass(domain: string): string {
  return `spf=pass (sender IP is 203.0.113.5) smtp.mailfrom=${domain}; dkim=pass (signature was verified) header.d=${domain};dmarc=pass action=none header.from=${domain};compauth=pass reason=100`;
}

export function eopFail(domain: string): string {
  return `spf=fail (sender IP is 198.51.100.7) smtp.mailfrom=${domain}; dkim=none (message not signed) header.d=none;dmarc=fail action=quarantine header.from=${domain};compauth=fail reason=000`;
}

export function buildMail(o: MailOptions): string {
  const domain = o.from.slice(o.from.lastIndexOf('@') + 1).replace(/>.*$/, '');
  const headers: string[] = [];
  const ar = o.authResults === undefined ? eopPass(domain) : o.authResults;
  if (ar !== null) headers.push(`Authentication-Results: ${ar}`);
  headers.push(...(o.extraHeaders ?? []));
  headers.push(
    `From: ${o.from}`,
    `To: ${o.to}`,
    `Subject: ${o.subject ?? 'A task for you'}`,
    `Date: ${new Date().toUTCString()}`,
  );
  if (o.messageId !== null) headers.push(`Message-ID: ${o.messageId ?? `<${randomUUID()}@${domain}>`}`);
  if (o.inReplyTo) headers.push(`In-Reply-To: ${o.inReplyTo}`, `References: ${o.inReplyTo}`);
  headers.push('MIME-Version: 1.0');
  const body = o.body ?? 'Please summarise the attached report.';
  if (!o.attachments?.length) {
    headers.push('Content-Type: text/plain; charset=utf-8', 'Content-Transfer-Encoding: 8bit');
    return `${headers.join('\r\n')}\r\n\r\n${body}\r\n`;
  }
  const boundary = `b-${randomUUID()}`;
  headers.push(`Content-Type: multipart/mixed; boundary="${boundary}"`);
  const parts = [`--${boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n${body}\r\n`];
  for (const a of o.attachments) {
    const b64 = a.content.toString('base64').replace(/(.{76})/g, '$1\r\n');
    parts.push(
      `--${boundary}\r\nContent-Type: ${a.contentType}; name="${a.filename}"\r\nContent-Disposition: attachment; filename="${a.filename}"\r\nContent-Transfer-Encoding: base64\r\n\r\n${b64}\r\n`,
    );
  }
  return `${headers.join('\r\n')}\r\n\r\n${parts.join('')}--${boundary}--\r\n`;
}
