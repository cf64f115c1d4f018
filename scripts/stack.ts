/**
 * `npm run stack`: the embedded local stack on its own (identity provider, Key Vault, Dovecot,
 * SMTP, Azurite on 127.0.0.1), and a local.settings.json that points the app at it, so
 * `npm start` in another terminal runs inboxq against it as `func start` would.
 *
 *   npm run stack [-- --seed] [-- --force]
 *
 * --seed   puts one mail from an authorized sender into the mailbox, and prints what arrives in
 *          that sender's mailbox (the acknowledgement, then the answer once a worker replied)
 * --out F  writes the settings to F instead
 * --force  overwrites a local.settings.json this script did not write (it is kept otherwise, and
 *          the settings go to local.settings.stack.json: `npm start -- --settings local.settings.stack.json`)
 *
 * The drain runs every 10 seconds. Ctrl-C or SIGTERM stops the stack and removes its files.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';

import { LocalStack } from '../localstack';
import { FABRIKAM_PASS, sampleMail } from '../localstack/sample-mail';

const MAILBOX = 'agent@contoso.test';
const SENDER = 'alice@fabrikam.test';
const WRITTEN_BY = 'npm run stack';
const ROOT = path.join(__dirname, '..', '..');

function seedMail(): string {
  return sampleMail({
    from: `Alice Smith <${SENDER}>`,
    to: MAILBOX,
    authResults: FABRIKAM_PASS,
    subject: 'Hello from the local stack',
    body: 'Could you confirm this became a task?',
  });
}

/** Where the settings go: local.settings.json unless it is someone's own file. */
function settingsTarget(force: boolean): string {
  const file = path.join(ROOT, 'local.settings.json');
  if (force || !existsSync(file)) return file;
  try {
    const json = JSON.parse(readFileSync(file, 'utf8')) as { writtenBy?: string };
    if (json.writtenBy === WRITTEN_BY) return file;
  } catch {
    // Not JSON we can read: someone's file all the same.
  }
  return path.join(ROOT, 'local.settings.stack.json');
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      seed: { type: 'boolean', default: false },
      force: { type: 'boolean', default: false },
      out: { type: 'string' },
    },
  });
  const stack = await LocalStack.start();
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    console.log(`\nlocal stack: ${signal}, stopping`);
    stack.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        console.error(`local stack: stopping failed: ${String(err)}`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));

  const values_ = {
    FUNCTIONS_WORKER_RUNTIME: 'node',
    ...stack.settings(MAILBOX, { INBOXQ_AUTHORIZED_SENDERS: SENDER, INBOXQ_DRAIN_SCHEDULE: '*/10 * * * * *' }),
    ...stack.sdkSettings(),
  };
  const target = values.out ? path.resolve(values.out) : settingsTarget(values.force);
  writeFileSync(target, `${JSON.stringify({ IsEncrypted: false, writtenBy: WRITTEN_BY, Values: values_ }, null, 2)}\n`);
  const rel = path.relative(ROOT, target);
  console.log(`local stack: running on 127.0.0.1 (files in ${stack.dir})`);
  console.log(`  identity provider ${stack.idp.url}   Key Vault ${stack.vault.url}`);
  console.log(
    `  IMAP 127.0.0.1:${stack.dovecot.imapPort}   SMTP 127.0.0.1:${stack.smtp.port}   Azurite queues :${stack.azurite.queuePort}`,
  );
  console.log(`  mailbox ${MAILBOX}, authorized sender ${SENDER}, drain every 10 s`);
  console.log(`local stack: wrote ${rel}`);
  const start = rel === 'local.settings.json' ? 'npm start' : `npm start -- --settings ${rel}`;
  if (rel === 'local.settings.stack.json') console.log('  (your local.settings.json was kept)');
  console.log(`  in another terminal: ${start}        (the app: timer, drain, reply)`);
  console.log(`  and optionally:      npm run worker   (the sample worker answers each task)`);
  console.log(
    `  the operator's view: npm run inboxq:local -- status${values.out ? ` --stack ${rel}` : ''}   (also trace, release, replay, doctor)`,
  );

  if (values.seed) {
    await stack.appendMail(MAILBOX, seedMail());
    console.log(
      `local stack: seeded ${MAILBOX} with a mail from ${SENDER}; what arrives in ${SENDER}'s mailbox is printed here`,
    );
    const seen = new Set<number>();
    const watch = async () => {
      while (!stopping) {
        for (const m of await stack.readFolder(SENDER, 'INBOX').catch(() => [])) {
          if (seen.has(m.uid)) continue;
          seen.add(m.uid);
          const subject = /^Subject: (.*)$/im.exec(m.source.toString('utf8'))?.[1] ?? '(no subject)';
          console.log(`local stack: ${SENDER} received "${subject}"`);
        }
        await new Promise((r) => setTimeout(r, 2000));
      }
    };
    void watch();
  }
  console.log('local stack: Ctrl-C stops it');
}

main().catch((err: unknown) => {
  console.error(`local stack: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
