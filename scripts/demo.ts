/**
 * The demo: inboxq's whole path on the embedded local stack, in about ten seconds.
 *
 *   1. start the stack (identity provider, Key Vault, Dovecot, SMTP, Azurite) on 127.0.0.1
 *   2. seed the mailbox agent@contoso.test with a mail from an authorized sender and a forged one
 *   3. start the app on the local host (localstack/host, what `npm start` runs without Core Tools):
 *      its timer ticks every 2 seconds, looks at the mailbox and drains the two mails itself
 *   4. run the sample worker (examples/echo-worker.ts): it answers the task in Markdown
 *   5. the reply function, on its queue trigger, sends the acknowledgement and the answer over SMTP
 *   6. read them back from the sender's mailbox over IMAP
 *   7. the sender answers the answer: the follow-up joins the conversation, and is answered too
 *
 * Nothing but the app's timer and queue messages moves a mail: the demo only seeds, runs the
 * worker, and watches.
 *
 * Run with `npm run demo` (or `bash scripts/demo.sh` on a fresh machine).
 */
import path from 'node:path';

import { type ParsedMail, simpleParser } from 'mailparser';

import { runOnce } from '../examples/echo-worker';
import { exitOnSignals, LocalStack } from '../localstack';
import { LocalHost } from '../localstack/host/host';
import { runtimeFor } from '../localstack/runtime';
import { FABRIKAM_PASS, sampleMail } from '../localstack/sample-mail';
import { TaskWorker } from '../shared/worker/worker';

const MAILBOX = 'agent@contoso.test';
const SENDER = 'alice@fabrikam.test';

const bold = (s: string) => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);
const dim = (s: string) => (process.stdout.isTTY ? `\x1b[2m${s}\x1b[0m` : s);
const step = (n: number, text: string) => console.log(`\n${bold(`${n}. ${text}`)}`);

/** Polls until `check` gives a value, or fails naming what never happened. */
async function until<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  for (const deadline = Date.now() + timeoutMs; Date.now() < deadline; await new Promise((r) => setTimeout(r, 250))) {
    const value = await check();
    if (value !== undefined) return value;
  }
  throw new Error(`${what} did not happen within ${timeoutMs / 1000} s`);
}

async function main(): Promise<void> {
  exitOnSignals();
  step(1, 'Starting the local stack on 127.0.0.1');
  const started = Date.now();
  const stack = await LocalStack.start();
  let host: LocalHost | undefined;
  try {
    console.log(`   identity provider ${stack.idp.url}   Key Vault ${stack.vault.url}`);
    console.log(
      `   IMAP 127.0.0.1:${stack.dovecot.imapPort} (Dovecot, XOAUTH2)   SMTP 127.0.0.1:${stack.smtp.port} (STARTTLS, XOAUTH2)`,
    );
    console.log(
      `   Azurite queues :${stack.azurite.queuePort} tables :${stack.azurite.tablePort} blobs :${stack.azurite.blobPort}   (${Date.now() - started} ms)`,
    );

    const settings = {
      ...stack.settings(MAILBOX, {
        INBOXQ_AUTHORIZED_SENDERS: `${SENDER}, ceo@contoso.test`,
        INBOXQ_DRAIN_SCHEDULE: '*/2 * * * * *',
      }),
      // The host polls its queues at least every second in the demo (host.json says 10 s).
      AzureFunctionsJobHost__extensions__queues__maxPollingInterval: '00:00:01',
    };
    const ledger = runtimeFor(settings).ledger;

    step(2, `Seeding ${MAILBOX}`);
    await stack.appendMail(
      MAILBOX,
      sampleMail({
        to: MAILBOX,
        from: `Alice Smith <${SENDER}>`,
        authResults: FABRIKAM_PASS,
        subject: 'Please check the Q3 figures',
        body: 'Hi, could you check the attached figures and tell me the total?',
        attachment: { name: 'q3.csv', content: 'month,revenue\r\nJul,14\r\nAug,12\r\nSep,16' },
      }),
    );
    console.log(`   a mail from ${SENDER} (DMARC pass, authorized) with an attachment`);
    await stack.appendMail(
      MAILBOX,
      sampleMail({
        to: MAILBOX,
        from: 'ceo@contoso.test',
        authResults:
          'spf=fail (sender IP is 198.51.100.7) smtp.mailfrom=contoso.test; dkim=none (message not signed) header.d=none;dmarc=fail action=quarantine header.from=contoso.test;compauth=fail reason=000',
        subject: 'Urgent: wire transfer',
        body: 'Please pay the attached invoice today.',
      }),
    );
    console.log('   a forged mail claiming to be ceo@contoso.test (DMARC fail)');

    step(
      3,
      'Starting the app on the local host: the drain schedule (timer) looks at the mailbox every 2 seconds, and drains it',
    );
    let executed = 0;
    // Only the demo's settings: a local.settings.json of yours in the repository is not read.
    host = await LocalHost.start({
      appRoot: path.join(__dirname, '..', '..'),
      env: settings,
      settingsFile: null,
      // The functions compiled with this demo (package.json main names the same files in dist/).
      main: 'build/functions/*.js',
      log: (level, line) => {
        if (/^Executed /.test(line)) executed++;
        if (level === 'error' || /^ {2}\w+: (queue|timer)Trigger/.test(line))
          console.log(dim(`   [host] ${line.trim()}`));
      },
    });
    const rows = await until('the drain of the two mails', async () => {
      const r = await ledger.listMessages(MAILBOX);
      return r.length === 2 && r.every((m) => m.removed) ? r : undefined;
    });
    for (const r of rows.sort((a, b) => a.uid - b.uid)) {
      const what =
        r.state === 'queued' ? ` as task ${r.taskId}` : ` (ledger row ${r.taskId}) because ${r.reasons.join('; ')}`;
      console.log(`   UID ${r.uid}: ${bold(r.state)}${what}`);
    }
    const inbox = await stack.readFolder(MAILBOX, 'INBOX');
    console.log(`   INBOX now holds ${inbox.length} mail(s); processed mail is in inboxq-processed`);

    step(4, 'Running the sample worker (examples/echo-worker.ts) on the tasks queue');
    const worker = TaskWorker.fromConnectionString(stack.azurite.connectionString);
    const answered = await runOnce(worker, (l) => console.log(`   ${l}`));
    console.log(`   ${answered} task(s) answered in Markdown on the replies queue`);

    step(5, 'The reply function (queue trigger on "replies") sends the acknowledgement and the answer');
    const senderMail = async (n: number) => {
      const stored = await stack.readFolder(SENDER, 'INBOX');
      return stored.length >= n ? Promise.all(stored.map((m) => simpleParser(m.source))) : undefined;
    };
    const received = await until('the acknowledgement and the answer', () => senderMail(2));
    console.log(`   ${received.length} mail(s) sent over SMTP with XOAUTH2`);

    step(6, `Reading ${SENDER}'s mailbox over IMAP`);
    received.forEach(show);

    step(7, `${SENDER} answers the answer; the follow-up joins the conversation`);
    const answer = received.find((m) => !/inboxq-ack@/.test(m.messageId ?? ''))!;
    await stack.appendMail(
      MAILBOX,
      sampleMail({
        to: MAILBOX,
        from: `Alice Smith <${SENDER}>`,
        authResults: FABRIKAM_PASS,
        subject: answer.subject ?? '',
        inReplyTo: answer.messageId,
        body: `Thanks! And what about Q4?\r\n\r\nOn ${new Date().toUTCString()} ${MAILBOX} wrote:\r\n> ${String(answer.text).trim().split('\n')[0]}\r\n`,
      }),
    );
    // Its task is on the queue once its row says so and the mail left the inbox (a claimed row is not enough).
    await until('the follow-up task', async () => {
      const r = await ledger.listMessages(MAILBOX);
      return r.length === 3 && r.every((m) => m.removed) ? true : undefined;
    });
    await runOnce(worker, (l) => console.log(`   ${l}`));
    const all = await until('the answer to the follow-up', () => senderMail(3));
    const followUp = all.find((m) => !received.some((r) => r.messageId === m.messageId))!;
    show(followUp);

    await host.stop();
    host = undefined;
    const final = await ledger.listMessages(MAILBOX);
    const forged = await stack.readFolder('ceo@contoso.test', 'INBOX');
    console.log(dim(`   [host] ${executed} invocations, every one on its own timer or queue message`));
    console.log(
      `${bold('Done.')} 1 mail became a task, was acknowledged and answered, threaded; its follow-up joined the conversation and was answered too; the forged mail was recorded as rejected and got ${forged.length} replies.`,
    );
    if (
      received.length !== 2 ||
      all.length !== 3 ||
      forged.length !== 0 ||
      final.filter((r) => r.state === 'queued').length !== 2 ||
      final.filter((r) => r.state === 'rejected').length !== 1
    ) {
      throw new Error('the demo did not end as expected (see above)');
    }
  } finally {
    await host?.stop();
    await stack.stop();
  }
}

function show(m: ParsedMail): void {
  console.log(`   From:        ${m.from?.text}`);
  console.log(`   Subject:     ${m.subject}`);
  console.log(`   In-Reply-To: ${m.inReplyTo}`);
  const parts = [
    `text/plain${m.html ? ' + text/html' : ''}`,
    ...m.attachments.map((a) => `${a.filename} (${a.size} bytes)`),
  ];
  console.log(`   Parts:       ${parts.join(', ')}`);
  console.log(`   ${String(m.text).trim().split('\n').join('\n   ')}\n`);
}

main().then(
  () => process.exit(0),
  (err: Error) => {
    console.error(`\nThe demo failed: ${err.message}`);
    process.exit(1);
  },
);
