/**
 * The mails the demo and `npm run stack -- --seed` put into the local mailbox: a plain or
 * multipart mail with an Authentication-Results header as Microsoft 365 writes it.
 */
import { randomUUID } from 'node:crypto';

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
