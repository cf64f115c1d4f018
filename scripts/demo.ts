/**
 * The demo: inboxq's whole path on the embedded local stack, in about ten seconds.
 *
 *   1. start the stack (identity provider, Key Vault, Dovecot, SMTP, Azurite) on 127.0.0.1
 *   2. seed the mailbox agent@contoso.test with a mail from an authorized sender and a forged one
 *   3. run a tick of the drain schedule (timer) and the drain it requests (queue trigger)
 *   4. run the sample worker (examples/echo-worker.ts): it answers the task in Markdown
 *   5. run the reply function on the replies queue (as the Functions host would): the
 *      acknowledgement and the answer go out over SMTP
 *   6. read them back from the sender's mailbox over IMAP
 *   7. the sender answers the answer: the follow-up joins the conversation, and is answered too
 *
 * Run with `npm run demo` (or `bash scripts/demo.sh` on a fresh machine).
 */
import { randomUUID } from 'node:crypto';

import { InvocationContext, type Timer } from '@azure/functions';
import { QueueClient } from '@azure/storage-queue';
import { type ParsedMail, simpleParser } from 'mailparser';

import { runOnce } from '../examples/echo-worker';
import { exitOnSignals, LocalStack } from '../localstack';
import { runQueueTrigger } from '../localstack/queue-runner';
import { DRAIN_REQUESTS_QUEUE, REPLIES_QUEUE } from '../shared/contract/messages';
import type { DrainSummary } from '../shared/drain/drain';
import { createHandlers } from '../shared/host/handlers';
import { deploymentFor } from '../shared/host/runtime';
import { TaskWorker } from '../shared/worker/worker';

const MAILBOX = 'agent@contoso.test';
const SENDER = 'alice@fabrikam.test';

const bold = (s: string) => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);
const dim = (s: string) => (process.stdout.isTTY ? `\x1b[2m${s}\x1b[0m` : s);
const step = (n: number, text: string) => console.log(`\n${bold(`${n}. ${text}`)}`);

function context(name: string): InvocationContext {
  return new InvocationContext({
    functionName: name,
    invocationId: randomUUID(),
    logHandler: (level, ...args) => console.log(dim(`   [${name} ${level}] ${args.join(' ')}`)),
  });
}

function mail(opts: {
  from: string;
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
    `To: ${MAILBOX}`,
    `Subject: ${opts.subject}`,
    `Date: ${new Date().toUTCString()}`,
    `Message-ID: ${id}`,
    ...(opts.inReplyTo ? [`In-Reply-To: ${opts.inReplyTo}`, `References: ${opts.inReplyTo}`] : []),
    'MIME-Version: 1.0',
  ];
  if (!opts.attachment) return [...head, 'Content-Type: text/plain; charset=utf-8', '', opts.body, ''].join('\r\n');
  const b = 'demo-boundary';
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

async function main(): Promise<void> {
  exitOnSignals();
  step(1, 'Starting the local stack on 127.0.0.1');
  const started = Date.now();
  const stack = await LocalStack.start();
  try {
    console.log(`   identity provider ${stack.idp.url}   Key Vault ${stack.vault.url}`);
    console.log(
      `   IMAP 127.0.0.1:${stack.dovecot.imapPort} (Dovecot, XOAUTH2)   SMTP 127.0.0.1:${stack.smtp.port} (STARTTLS, XOAUTH2)`,
    );
    console.log(
      `   Azurite queues :${stack.azurite.queuePort} tables :${stack.azurite.tablePort} blobs :${stack.azurite.blobPort}   (${Date.now() - started} ms)`,
    );

    const settings = stack.settings(MAILBOX, { INBOXQ_AUTHORIZED_SENDERS: `${SENDER}, ceo@contoso.test` });
    const handlers = createHandlers(() => deploymentFor(settings));

    step(2, `Seeding ${MAILBOX}`);
    await stack.appendMail(
      MAILBOX,
      mail({
        from: `Alice Smith <${SENDER}>`,
        authResults:
          'spf=pass (sender IP is 203.0.113.5) smtp.mailfrom=fabrikam.test; dkim=pass (signature was verified) header.d=fabrikam.test;dmarc=pass action=none header.from=fabrikam.test;compauth=pass reason=100',
        subject: 'Please check the Q3 figures',
        body: 'Hi, could you check the attached figures and tell me the total?',
        attachment: { name: 'q3.csv', content: 'month,revenue\r\nJul,14\r\nAug,12\r\nSep,16' },
      }),
    );
    console.log(`   a mail from ${SENDER} (DMARC pass, authorized) with an attachment`);
    await stack.appendMail(
      MAILBOX,
      mail({
        from: 'ceo@contoso.test',
        authResults:
          'spf=fail (sender IP is 198.51.100.7) smtp.mailfrom=contoso.test; dkim=none (message not signed) header.d=none;dmarc=fail action=quarantine header.from=contoso.test;compauth=fail reason=000',
        subject: 'Urgent: wire transfer',
        body: 'Please pay the attached invoice today.',
      }),
    );
    console.log('   a forged mail claiming to be ceo@contoso.test (DMARC fail)');

    const worker = TaskWorker.fromConnectionString(stack.azurite.connectionString);
    const drain = async (): Promise<DrainSummary> => {
      await handlers.schedule({ isPastDue: false } as Timer, context('drainSchedule'));
      let summary: DrainSummary | undefined;
      await runQueueTrigger({
        queue: new QueueClient(stack.azurite.connectionString, DRAIN_REQUESTS_QUEUE),
        poisonQueue: new QueueClient(stack.azurite.connectionString, `${DRAIN_REQUESTS_QUEUE}-poison`),
        functionName: 'drain',
        handler: async (m, c) => {
          const outcome = await handlers.drain(m, c);
          if (outcome.error) throw outcome.error;
          summary = outcome.summary;
        },
      });
      if (!summary) throw new Error('the drain did not run');
      for (const o of summary.outcomes) {
        const what =
          o.outcome === 'queued' ? ` as task ${o.taskId}` : ` (ledger row ${o.taskId}) because ${o.reasons.join('; ')}`;
        console.log(`   UID ${o.uid}: ${bold(o.outcome)}${what}`);
      }
      return summary;
    };
    const sendReplies = async () => {
      const run = await runQueueTrigger({
        queue: new QueueClient(stack.azurite.connectionString, REPLIES_QUEUE),
        poisonQueue: new QueueClient(stack.azurite.connectionString, `${REPLIES_QUEUE}-poison`),
        functionName: 'reply',
        handler: (m, c) => handlers.reply(m, c),
      });
      console.log(`   ${run.succeeded} mail(s) sent over SMTP with XOAUTH2, ${run.failed} failed`);
    };
    const show = (m: ParsedMail) => {
      console.log(`   From:        ${m.from?.text}`);
      console.log(`   Subject:     ${m.subject}`);
      console.log(`   In-Reply-To: ${m.inReplyTo}`);
      const parts = [
        `text/plain${m.html ? ' + text/html' : ''}`,
        ...m.attachments.map((a) => `${a.filename} (${a.size} bytes)`),
      ];
      console.log(`   Parts:       ${parts.join(', ')}`);
      console.log(`   ${String(m.text).trim().split('\n').join('\n   ')}\n`);
    };

    step(
      3,
      'Running the drain schedule (timer trigger), then the drain it requests (queue trigger on "drain-requests")',
    );
    const first = await drain();
    const inbox = await stack.readFolder(MAILBOX, 'INBOX');
    console.log(`   INBOX now holds ${inbox.length} mail(s); processed mail is in inboxq-processed`);

    step(4, 'Running the sample worker (examples/echo-worker.ts) on the tasks queue');
    const answered = await runOnce(worker, (l) => console.log(`   ${l}`));
    console.log(`   ${answered} task(s) answered in Markdown on the replies queue`);

    step(5, 'Running the reply function (queue trigger on "replies"): the acknowledgement and the answer');
    await sendReplies();

    step(6, `Reading ${SENDER}'s mailbox over IMAP`);
    const received = await Promise.all((await stack.readFolder(SENDER, 'INBOX')).map((m) => simpleParser(m.source)));
    received.forEach(show);

    step(7, `${SENDER} answers the answer; the follow-up joins the conversation`);
    const answer = received.find((m) => !/inboxq-ack@/.test(m.messageId ?? ''))!;
    await stack.appendMail(
      MAILBOX,
      mail({
        from: `Alice Smith <${SENDER}>`,
        authResults:
          'spf=pass (sender IP is 203.0.113.5) smtp.mailfrom=fabrikam.test; dkim=pass (signature was verified) header.d=fabrikam.test;dmarc=pass action=none header.from=fabrikam.test;compauth=pass reason=100',
        subject: answer.subject ?? '',
        inReplyTo: answer.messageId,
        body: `Thanks! And what about Q4?\r\n\r\nOn ${new Date().toUTCString()} ${MAILBOX} wrote:\r\n> ${String(answer.text).trim().split('\n')[0]}\r\n`,
      }),
    );
    const second = await drain();
    await runOnce(worker, (l) => console.log(`   ${l}`));
    await sendReplies();
    const all = await Promise.all((await stack.readFolder(SENDER, 'INBOX')).map((m) => simpleParser(m.source)));
    const followUp = all.find((m) => !received.some((r) => r.messageId === m.messageId))!;
    show(followUp);

    const forged = await stack.readFolder('ceo@contoso.test', 'INBOX');
    console.log(
      `${bold('Done.')} 1 mail became a task, was acknowledged and answered, threaded; its follow-up joined the conversation and was answered too; the forged mail was recorded as rejected and got ${forged.length} replies.`,
    );
    if (
      received.length !== 2 ||
      all.length !== 3 ||
      forged.length !== 0 ||
      first.counts.queued !== 1 ||
      first.counts.rejected !== 1 ||
      second.counts.queued !== 1
    ) {
      throw new Error('the demo did not end as expected (see above)');
    }
  } finally {
    await stack.stop();
  }
}

main().then(
  () => process.exit(0),
  (err: Error) => {
    console.error(`\nThe demo failed: ${err.message}`);
    process.exit(1);
  },
);
