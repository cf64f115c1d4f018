/**
 * The mails the demo and `npm run stack -- --seed` put into the local mailbox: a plain or
 * multipart mail with an Authentication-Results header as Microsoft 365 writes it; and the mails
 * the benchmarks drain (small ones, and a large one).
 */
import { randomBytes, randomUUID } from 'node:crypto';

/** What Exchange Online Protection writes for a fabrikam.test mail that passed DMARC. */
export const FABRIKAM_PASS =
  'spf=pass (sender IP is 203.0.113.5) smtp.mailfrom=fabrikam.test; dkim=pass (signature was verified) header.d=fabrikam.test;dmarc=pass action=none header.from=fabrikam.test;compauth=pass reason=100';

export function sampleMail(opts: {
  from: string;
  to: string;
  authResults: string;
  subject: string;
  body: string;
  inReplyTo?: string;
  attachment?: { name: string; content: string };
}): string {
  const domain = /@([^>\s]+)/.exec(opts.from)![1];
  const id = `<${randomUUID()}@${domain}>`;
  const head = [
    `Authentication-Results: ${opts.authResults}`,
    `From: ${opts.from}`,
    `To: ${opts.to}`,
    `Subject: ${opts.subject}`,
    `Date: ${new Date().toUTCString()}`,
    `Message-ID: ${id}`,
    ...(opts.inReplyTo ? [`In-Reply-To: ${opts.inReplyTo}`, `References: ${opts.inReplyTo}`] : []),
    'MIME-Version: 1.0',
  ];
  if (!opts.attachment) return [...head, 'Content-Type: text/plain; charset=utf-8', '', opts.body, ''].join('\r\n');
  const b = 'sample-boundary';
  return [
    ...head,
    `Content-Type: multipart/mixed; boundary="${b}"`,
    '',
    `--${b}`,
    'Content-Type: text/plain; charset=utf-8',
    '',
    opts.body,
    `--${b}`,
    `Content-Type: text/csv; name="${opts.attachment.name}"`,
    `Content-Disposition: attachment; filename="${opts.attachment.name}"`,
    '',
    opts.attachment.content,
    `--${b}--`,
    '',
  ].join('\r\n');
}

/**
 * The benchmarks' mail number `i` to `mailbox`: from one of 20 partner.test senders passing DMARC,
 * text/plain, its body `bodyBytes` of text in lines of 77 (or one short line); with `inReplyTo`, a
 * follow-up answering that Message-ID (send it from the same sender, `i` modulo 20, to continue its conversation).
 */
export function benchMail(i: number, mailbox: string, bodyBytes = 0, inReplyTo?: string): Buffer {
  const body = bodyBytes > 0 ? `${'x'.repeat(75)}\r\n`.repeat(Math.ceil(bodyBytes / 77)) : `mail ${i}\r\n`;
  return Buffer.from(
    [
      'Authentication-Results: spf=pass smtp.mailfrom=partner.test; dkim=pass header.d=partner.test;dmarc=pass action=none header.from=partner.test;compauth=pass reason=100',
      `From: sender${i % 20}@partner.test`,
      `To: ${mailbox}`,
      `Subject: ${inReplyTo ? 'Re: ' : ''}bench ${i}`,
      `Message-ID: <${randomUUID()}@partner.test>`,
      ...(inReplyTo ? [`In-Reply-To: ${inReplyTo}`, `References: ${inReplyTo}`] : []),
      'Content-Type: text/plain; charset=utf-8',
      '',
      body,
    ].join('\r\n'),
  );
}

/**
 * A mail from `from` (its domain passing DMARC) to `to`, most of it one attachment of
 * `attachmentBytes` random bytes, base64 in lines of 76: what the benchmarks drain as large mail.
 */
export function largeMail(from: string, to: string, attachmentBytes: number, subject = 'large'): Buffer {
  const domain = from.split('@')[1]!;
  const attachment = randomBytes(attachmentBytes)
    .toString('base64')
    .replace(/(.{76})/g, '$1\r\n');
  return Buffer.from(
    [
      `Authentication-Results: spf=pass smtp.mailfrom=${domain}; dmarc=pass action=none header.from=${domain}`,
      `From: ${from}`,
      `To: ${to}`,
      `Subject: ${subject}`,
      `Message-ID: <${randomUUID()}@${domain}>`,
      'MIME-Version: 1.0',
      'Content-Type: multipart/mixed; boundary="b"',
      '',
      '--b',
      'Content-Type: text/plain',
      '',
      'see attached',
      '--b',
      'Content-Type: application/octet-stream; name="big.bin"',
      'Content-Disposition: attachment; filename="big.bin"',
      'Content-Transfer-Encoding: base64',
      '',
      attachment,
      '--b--',
      '',
    ].join('\r\n'),
  );
}
