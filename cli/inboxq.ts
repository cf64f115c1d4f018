#!/usr/bin/env node
/**
 * The inboxq command line.
 *
 *   inboxq check-sender (--policy policy.json | --mailbox ADDRESS|KEY [--settings FILE]) message.eml
 *       Explains the verdict the drain would give a saved mail. Prints one JSON object
 *       {"verdict","sender","reasons"}; exit 0 accept, 1 reject, 2 usage error or unreadable input.
 *
 *   inboxq doctor [--mailbox ADDRESS|KEY] [--settings FILE] [--json]
 *       Checks each mailbox's setup (or the one named) step by step against the real services and
 *       names the step to fix, with the command. Exit 0 when no check fails, 1 otherwise.
 *
 *   inboxq trace <Message-ID | task id | sender | conversation id> [--mailbox M] [--json]
 *       The life of each matching mail, oldest first. Exit 1 when nothing matches.
 *   inboxq status [--mailbox M] [--json]
 *       Runs, INBOX, set-aside mail, queues and pacing per mailbox. Exit 1 when stale or poisoned.
 *   inboxq release <task id | UID ...> [--mailbox M]
 *       Moves set-aside or rejected mail back to INBOX for the next run.
 *   inboxq replay replies-poison [--mailbox M] [--dry-run]
 *       Puts poisoned replies back on the replies queue. (The commands are in ops.ts.)
 *
 * Settings come from the environment. A settings file (local.settings.json, as `func start` reads
 * its Values) is read only when named with --settings, never found by itself: a file someone else
 * wrote in the current folder must not decide where the user's own Azure identity sends a token.
 * So a file may not point Key Vault or the login outside Microsoft's hosts, nor switch off the
 * vault's challenge check; the environment, set by the user, may (the local stack needs it).
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

import { z } from 'zod';

import { findMailbox, loadDeployment, notConfiguredHere } from '../shared/config/deployment';
import type { Env, SenderPolicy } from '../shared/config/types';
import { formatDoctorReport, runDoctorAll } from '../shared/doctor/doctor';
import { describeError } from '../shared/errors';
import { judgeMail } from '../shared/sender/judge';
import { release, replay, status, trace } from './ops';
import { type CliResult, jsonLine, MAILBOX_OPTIONS, settingsFromEnvironment, UsageError } from './settings';

export const policyFileSchema = z
  .object({
    authorizedSenders: z.array(z.string()),
    trustedAuthservId: z.string(),
    microsoftInternalFallback: z.boolean(),
  })
  .strict();

export { type CliResult, LOGIN_HOSTS, settingsFromEnvironment, UsageError, VAULT_DNS_SUFFIXES } from './settings';

const USAGE = `usage:
  inboxq check-sender --policy policy.json message.eml
  inboxq check-sender --mailbox agent@example.com [--settings local.settings.json] message.eml
  inboxq doctor [--mailbox agent@example.com | --mailbox KEY] [--settings local.settings.json] [--json] [--skip-sent-check]
  inboxq trace <Message-ID | task id | sender address | conversation id> [--mailbox M] [--json] [--max N] [--timeout S]
  inboxq status [--mailbox M] [--json] [--schedule "0 */2 * * * *"]
  inboxq release <task id | UID ...> [--mailbox M] [--json]
  inboxq replay replies-poison [--mailbox M] [--dry-run] [--json]

Settings come from the environment; --settings FILE adds the Values of a local.settings.json.

policy.json: {"authorizedSenders": ["alice@example.com", "*@partner.example"],
              "trustedAuthservId": "", "microsoftInternalFallback": true}`;

function readPolicy(path: string): SenderPolicy {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new UsageError(
      `policy file ${path} can't be read as JSON: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
    );
  }
  const parsed = policyFileSchema.safeParse(raw);
  if (!parsed.success) {
    throw new UsageError(
      `policy file ${path} is not a sender policy: ${parsed.error.issues.map((i) => `${i.path.join('.') || 'policy'}: ${i.message}`).join('; ')}`,
    );
  }
  return {
    authorizedSenders: parsed.data.authorizedSenders.map((s) => s.trim().toLowerCase()),
    trustedAuthservId: parsed.data.trustedAuthservId.trim().toLowerCase(),
    microsoftInternalFallback: parsed.data.microsoftInternalFallback,
  };
}

function mailboxPolicy(mailbox: string, env: Env): SenderPolicy {
  let mailboxes;
  try {
    mailboxes = loadDeployment(env).mailboxes;
  } catch (err) {
    throw new UsageError(`the settings can't be used: ${describeError(err)}`);
  }
  const config = findMailbox(mailboxes, mailbox);
  if (!config) throw new UsageError(notConfiguredHere(mailbox, mailboxes));
  return config.senderPolicy;
}

export function checkSender(args: string[], env: Env = process.env): CliResult {
  const { values, positionals } = parseArgs({
    args,
    options: {
      policy: { type: 'string' },
      mailbox: { type: 'string' },
      settings: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    allowPositionals: true,
  });
  if (values.help) return { code: 0, stdout: `${USAGE}\n`, stderr: '' };
  if (positionals.length !== 1) throw new UsageError('name exactly one message file (.eml)');
  if (!values.policy === !values.mailbox) throw new UsageError('give either --policy FILE or --mailbox ADDRESS');
  const policy = values.policy
    ? readPolicy(values.policy)
    : mailboxPolicy(values.mailbox!, settingsFromEnvironment(env, values.settings));
  let source: Buffer;
  try {
    source = readFileSync(positionals[0]!);
  } catch (err) {
    throw new UsageError(
      `message file ${positionals[0]} can't be read: ${(err as NodeJS.ErrnoException).code ?? 'error'}`,
    );
  }
  const judged = judgeMail(source, policy);
  const out =
    judged.kind === 'malformed'
      ? { verdict: 'reject' as const, sender: null, reasons: [`the mail is malformed: ${judged.reason}`] }
      : { verdict: judged.verdict.verdict, sender: judged.verdict.sender, reasons: judged.verdict.reasons };
  return { code: out.verdict === 'accept' ? 0 : 1, stdout: jsonLine(out), stderr: '' };
}

export async function doctor(args: string[], env: Env = process.env): Promise<CliResult> {
  const { values } = parseArgs({
    args,
    options: {
      ...MAILBOX_OPTIONS,
      'skip-sent-check': { type: 'boolean' },
    },
    allowPositionals: false,
  });
  const settings = settingsFromEnvironment(env, values.settings);
  const reports = await runDoctorAll(settings, {
    ...(values.mailbox ? { mailbox: values.mailbox } : {}),
    skipSentCheck: values['skip-sent-check'] ?? false,
  });
  // A step skipped by choice or because the server can't tell (the quota) is no failure; a step
  // skipped because an earlier one failed comes with that failure.
  const passed = (checks: { status: string }[]) => checks.every((c) => c.status !== 'fail');
  const ok = reports.every((r) => passed(r.checks));
  // One mailbox: one report (an object in JSON); several: one after another (an array).
  const json = reports.map((r) => ({
    mailbox: r.mailbox,
    ...(r.key && r.key !== 'default' ? { key: r.key } : {}),
    ok: passed(r.checks),
    checks: r.checks,
  }));
  const stdout = values.json
    ? jsonLine(json.length === 1 ? json[0] : json)
    : reports.map((r) => formatDoctorReport(r.mailbox, r.checks)).join('\n');
  return { code: ok ? 0 : 1, stdout, stderr: '' };
}

const VERBS = ['check-sender', 'doctor', 'trace', 'status', 'release', 'replay'];

/** One verb's usage: its lines of USAGE, and where settings come from. */
export function verbUsage(verb: string): string {
  const lines = USAGE.split('\n').filter((line) => line.startsWith(`  inboxq ${verb} `));
  const policy = verb === 'check-sender' ? `\n\n${USAGE.slice(USAGE.indexOf('policy.json: '))}` : '';
  return `usage:\n${lines.join('\n')}\n\nSettings come from the environment; --settings FILE adds the Values of a local.settings.json.${policy}`;
}

export async function main(argv: string[], env: Env = process.env): Promise<CliResult> {
  const [command, ...rest] = argv;
  // `inboxq <verb> --help` (or -h), before anything after a `--` that ends the options.
  const options = rest.includes('--') ? rest.slice(0, rest.indexOf('--')) : rest;
  if (command && VERBS.includes(command) && options.some((a) => a === '--help' || a === '-h'))
    return { code: 0, stdout: `${verbUsage(command)}\n`, stderr: '' };
  try {
    switch (command) {
      case 'check-sender':
        return checkSender(rest, env);
      case 'doctor':
        return await doctor(rest, env);
      case 'trace':
        return await trace(rest, env);
      case 'status':
        return await status(rest, env);
      case 'release':
        return await release(rest, env);
      case 'replay':
        return await replay(rest, env);
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        return {
          code: command === undefined ? 2 : 0,
          stdout: command === undefined ? '' : `${USAGE}\n`,
          stderr: command === undefined ? `${USAGE}\n` : '',
        };
      default:
        throw new UsageError(`unknown command "${command}"`);
    }
  } catch (err) {
    if (err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      const what = err instanceof UsageError ? err.summary : (err as Error).message;
      return { code: 2, stdout: '', stderr: `inboxq: ${what}\n${USAGE}\n` };
    }
    return { code: 2, stdout: '', stderr: `inboxq: ${describeError(err)}\n` };
  }
}

if (require.main === module) {
  void main(process.argv.slice(2)).then((r) => {
    process.stdout.write(r.stdout);
    process.stderr.write(r.stderr);
    // Clients (MSAL, IMAP) may keep sockets alive: the verdict is in, leave now.
    process.exit(r.code);
  });
}
