/**
 * The operator's commands: trace, status, release, replay. Each reads the deployment's settings
 * (the environment, and --settings FILE as for doctor), reaches Storage with them (a connection
 * string, or the service URIs with DefaultAzureCredential: the operator's `az login`), and the
 * mailbox with the app's own credential. trace and status write nothing (no table or queue is even
 * created); release and replay write only what they say.
 */
import { parseArgs } from 'node:util';

import { findMailbox, loadDeployment, notConfiguredHere } from '../shared/config/deployment';
import type { Env, InboxqConfig } from '../shared/config/types';
import { ConversationStore } from '../shared/conversation/conversations';
import { tokenProviderFor } from '../shared/credentials/token';
import { describeError } from '../shared/errors';
import { taskIdsFor } from '../shared/identity/task-key';
import { Ledger } from '../shared/ledger/ledger';
import { MailboxSession } from '../shared/mailbox/imap';
import { releaseMails } from '../shared/ops/release';
import { formatReplay, replayPoisonedReplies } from '../shared/ops/replay';
import { formatStatus, type MailboxStatus, mailboxStatus } from '../shared/ops/status';
import { classifyQuery, formatTrace, printable, traceMail } from '../shared/ops/trace';
import { createStorageClients } from '../shared/storage/clients';
import { silentLogger } from '../shared/telemetry/log';
import { type CliResult, jsonLine, MAILBOX_OPTIONS, settingsFromEnvironment, UsageError } from './settings';

interface Selected {
  config: InboxqConfig;
  all: InboxqConfig[];
}

/** The mailboxes a command works on: the one named with --mailbox, else every one of the deployment. */
function mailboxesOf(settings: Env, mailbox: string | undefined): InboxqConfig[] {
  let all: InboxqConfig[];
  try {
    all = loadDeployment(settings).mailboxes;
  } catch (err) {
    throw new UsageError(`the settings can't be used: ${describeError(err)}`);
  }
  if (!mailbox) return all;
  const config = findMailbox(all, mailbox);
  if (!config) throw new UsageError(notConfiguredHere(mailbox, all));
  return [config];
}

function oneMailbox(settings: Env, mailbox: string | undefined, command: string): Selected {
  const all = mailboxesOf(settings, mailbox);
  if (all.length > 1)
    throw new UsageError(
      `${command} works on one mailbox: name it with --mailbox (${all.map((c) => c.key).join(', ')})`,
    );
  return { config: all[0]!, all };
}

function openSession(config: InboxqConfig): () => Promise<MailboxSession> {
  return () => MailboxSession.open({ config, tokens: tokenProviderFor(config), log: silentLogger });
}

export async function trace(args: string[], env: Env): Promise<CliResult> {
  const { values, positionals } = parseArgs({
    args,
    options: {
      ...MAILBOX_OPTIONS,
      max: { type: 'string', default: '50' },
      timeout: { type: 'string', default: '30' },
    },
    allowPositionals: true,
  });
  if (positionals.length !== 1)
    throw new UsageError('name exactly one Message-ID, task id, sender address or conversation id');
  const query = classifyQuery(positionals[0]!);
  if (!query)
    throw new UsageError(
      `"${printable(positionals[0]!)}" is not a Message-ID (<…>), a task id (32 hex digits), a sender address or a conversation id (24 hex digits)`,
    );
  const max = positiveInt(values.max, '--max');
  const timeoutS = positiveInt(values.timeout, '--timeout');
  const configs = mailboxesOf(settingsFromEnvironment(env, values.settings), values.mailbox);
  const sources = await Promise.all(
    configs.map(async (config) => {
      const storage = createStorageClients(config.storage, config.mailbox, { readOnly: true });
      return {
        config,
        ledger: new Ledger(storage, config.mailbox),
        conversations: new ConversationStore(storage, config.mailbox),
        taskIds: await taskIdsFor({ storage, config }, { create: false }),
      };
    }),
  );
  const result = await traceMail(sources, query, { max, deadline: Date.now() + timeoutS * 1000 });
  const stdout = values.json ? jsonLine(result) : formatTrace(result);
  return { code: result.mails.length > 0 ? 0 : 1, stdout, stderr: '' };
}

export async function status(args: string[], env: Env): Promise<CliResult> {
  const { values } = parseArgs({
    args,
    options: {
      ...MAILBOX_OPTIONS,
      schedule: { type: 'string' },
    },
    allowPositionals: false,
  });
  const settings = settingsFromEnvironment(env, values.settings);
  const schedule = values.schedule ?? settings['INBOXQ_DRAIN_SCHEDULE'];
  const now = Date.now();
  const out: MailboxStatus[] = [];
  for (const config of mailboxesOf(settings, values.mailbox)) {
    const storage = createStorageClients(config.storage, config.mailbox, { readOnly: true });
    out.push(
      await mailboxStatus(
        {
          config,
          storage,
          ledger: new Ledger(storage, config.mailbox),
          countMailbox: async () => {
            const session = await openSession(config)();
            try {
              const oldestArrival = await session.oldestArrival();
              const inbox = (await session.countIn('INBOX')) ?? 0;
              return { inbox, oldestArrival, setAside: await session.countIn(config.drain.quarantineFolder) };
            } finally {
              await session.close();
            }
          },
        },
        { schedule, now },
      ),
    );
  }
  const healthy = out.every((s) => s.problems.length === 0);
  const stdout = values.json ? jsonLine(out.length === 1 ? out[0] : out) : formatStatus(out, now);
  return { code: healthy ? 0 : 1, stdout, stderr: '' };
}

export async function release(args: string[], env: Env): Promise<CliResult> {
  const { values, positionals } = parseArgs({
    args,
    options: MAILBOX_OPTIONS,
    allowPositionals: true,
  });
  if (positionals.length === 0)
    throw new UsageError('name the mails to release: task ids, or the UIDs they had in INBOX');
  const { config } = oneMailbox(settingsFromEnvironment(env, values.settings), values.mailbox, 'release');
  const storage = createStorageClients(config.storage, config.mailbox);
  const outcomes = await releaseMails(
    { config, ledger: new Ledger(storage, config.mailbox), openSession: openSession(config) },
    positionals,
  );
  const stdout = values.json
    ? jsonLine({ mailbox: config.mailbox, released: outcomes })
    : outcomes
        .map((o) => `${o.released ? 'released' : 'not released'}  ${o.target}: ${o.detail}`)
        .join('\n')
        .concat('\n');
  return { code: outcomes.every((o) => o.released) ? 0 : 1, stdout, stderr: '' };
}

export async function replay(args: string[], env: Env): Promise<CliResult> {
  const { values, positionals } = parseArgs({
    args,
    options: {
      ...MAILBOX_OPTIONS,
      'dry-run': { type: 'boolean' },
    },
    allowPositionals: true,
  });
  if (positionals.length !== 1 || positionals[0] !== 'replies-poison')
    throw new UsageError('replay takes the queue to replay: inboxq replay replies-poison [--dry-run]');
  const configs = mailboxesOf(settingsFromEnvironment(env, values.settings), values.mailbox);
  // Every mailbox of a deployment shares one storage account (AzureWebJobsStorage).
  const storage = createStorageClients(configs[0]!.storage, configs[0]!.mailbox);
  const result = await replayPoisonedReplies(storage, configs, { dryRun: values['dry-run'] ?? false });
  return { code: 0, stdout: values.json ? jsonLine(result) : formatReplay(result), stderr: '' };
}

function positiveInt(value: string | undefined, name: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new UsageError(`${name} must be a positive whole number`);
  return n;
}
