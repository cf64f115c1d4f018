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
 *       names the step to fix, with the command. Exit 0 only when every check passes, 1 otherwise.
 *
 * Settings come from the environment. A settings file (local.settings.json, as `func start` reads
 * its Values) is read only when named with --settings, never found by itself: a file someone else
 * wrote in the current folder must not decide where the user's own Azure identity sends a token.
 * So a file may not point Key Vault or the login outside Microsoft's hosts, nor switch off the
 * vault's challenge check; the environment, set by the user, may (the local stack needs it).
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

import { parse as parseJson, type ParseError, printParseErrorCode } from 'jsonc-parser';
import { z } from 'zod';

import { findMailbox, loadDeployment, notConfiguredHere } from '../shared/config/deployment';
import type { Env, SenderPolicy } from '../shared/config/types';
import { formatDoctorReport, runDoctorAll } from '../shared/doctor/doctor';
import { describeError, InboxqError } from '../shared/errors';
import { judgeMail } from '../shared/sender/judge';

const USAGE = `usage:
  inboxq check-sender --policy policy.json message.eml
  inboxq check-sender --mailbox agent@example.com [--settings local.settings.json] message.eml
  inboxq doctor [--mailbox agent@example.com | --mailbox KEY] [--settings local.settings.json] [--json]

Settings come from the environment; --settings FILE adds the Values of a local.settings.json.

policy.json: {"authorizedSenders": ["alice@example.com", "*@partner.example"],
              "trustedAuthservId": "", "microsoftInternalFallback": true}`;

/** The command line or the settings file it names is wrong: printed with the usage, exit 2. */
export class UsageError extends InboxqError {
  override readonly code = 'USAGE';
}

export const policyFileSchema = z
  .object({
    authorizedSenders: z.array(z.string()),
    trustedAuthservId: z.string(),
    microsoftInternalFallback: z.boolean(),
  })
  .strict();

/** Key Vault's DNS suffixes in Azure's clouds: a vault named in a settings file must end in one. */
export const VAULT_DNS_SUFFIXES = [
  '.vault.azure.net',
  '.vault.azure.cn',
  '.vault.usgovcloudapi.net',
  '.vault.microsoftazure.de',
];
/** Entra ID's login hosts in Azure's clouds: an authority named in a settings file must be one. */
export const LOGIN_HOSTS = [
  'login.microsoftonline.com',
  'login.microsoftonline.us',
  'login.chinacloudapi.cn',
  'login.partner.microsoftonline.cn',
];

/** The host of an https URL, lower-case, or null. */
function httpsHost(value: string): string | null {
  try {
    const url = new URL(value);
    return url.protocol === 'https:' && !url.username && !url.password ? url.hostname.toLowerCase() : null;
  } catch {
    return null;
  }
}

/** Why a value from a settings file may not be used, or undefined. Names the setting, never quotes a value. */
function unsafeFromFile(name: string, value: string): string | undefined {
  const setting = name.replace(/^INBOXQ_[A-Z0-9_]+__/, 'INBOXQ_');
  if (setting === 'INBOXQ_KEYVAULT_URL' && value) {
    const host = httpsHost(value);
    if (!host || !VAULT_DNS_SUFFIXES.some((s) => host.endsWith(s) && host.length > s.length)) {
      return `${name} in the settings file is not an https URL of an Azure Key Vault (a host ending in ${VAULT_DNS_SUFFIXES.join(', ')}); set it in the environment to use another endpoint`;
    }
  }
  if ((setting === 'INBOXQ_AUTHORITY_HOST' || name === 'AZURE_AUTHORITY_HOST') && value) {
    const host = httpsHost(value);
    if (!host || !LOGIN_HOSTS.includes(host))
      return `${name} in the settings file is not an https URL of an Entra ID login host (${LOGIN_HOSTS.join(', ')}); set it in the environment to use another one`;
  }
  if (setting === 'INBOXQ_KEYVAULT_VERIFY_CHALLENGE_RESOURCE' && value.trim().toLowerCase() === 'false') {
    return `${name}=false can't come from a settings file (it lets a vault endpoint ask for a token meant elsewhere); set it in the environment if you mean it`;
  }
  return undefined;
}

/** Line and column (1-based) of an offset in a text. */
function position(text: string, offset: number): string {
  let line = 1;
  let lineStart = 0;
  for (let i = 0; i < offset && i < text.length; i++) {
    if (text.charCodeAt(i) === 10) {
      line++;
      lineStart = i + 1;
    }
  }
  return `line ${line}, column ${offset - lineStart + 1}`;
}

/**
 * Settings as the Functions host would see them: the environment, over the Values of the settings
 * file named with --settings. Errors name the file and the position, and quote nothing of it (a
 * settings file holds secrets).
 */
export function settingsFromEnvironment(env: Env = process.env, settingsFile?: string): Env {
  if (!settingsFile) return { ...env };
  let text: string;
  try {
    text = readFileSync(settingsFile, 'utf8');
  } catch (err) {
    throw new UsageError(
      `settings file ${settingsFile} can't be read: ${(err as NodeJS.ErrnoException).code ?? 'error'}`,
    );
  }
  const errors: ParseError[] = [];
  const parsed = parseJson(text, errors, {
    disallowComments: false,
    allowTrailingComma: false,
    allowEmptyContent: false,
  }) as unknown;
  if (errors.length > 0) {
    const first = errors[0]!;
    throw new UsageError(
      `settings file ${settingsFile} is not valid JSON: ${printParseErrorCode(first.error)} at ${position(text, first.offset)}`,
    );
  }
  const values = (parsed as { Values?: unknown } | null)?.Values;
  if (typeof values !== 'object' || values === null || Array.isArray(values))
    throw new UsageError(`settings file ${settingsFile} has no "Values" object (the shape of local.settings.json)`);
  const fromFile: Env = {};
  const problems: string[] = [];
  for (const [name, value] of Object.entries(values as Record<string, unknown>)) {
    if (typeof value !== 'string') continue;
    if (env[name] !== undefined) continue; // the environment wins
    const problem = unsafeFromFile(name, value);
    if (problem) problems.push(problem);
    fromFile[name] = value;
  }
  if (problems.length > 0) throw new UsageError(`settings file ${settingsFile}: ${problems.join('; ')}`);
  return { ...fromFile, ...env };
}

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

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
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
  return { code: out.verdict === 'accept' ? 0 : 1, stdout: `${JSON.stringify(out)}\n`, stderr: '' };
}

export async function doctor(args: string[], env: Env = process.env): Promise<CliResult> {
  const { values } = parseArgs({
    args,
    options: { mailbox: { type: 'string' }, settings: { type: 'string' }, json: { type: 'boolean' } },
    allowPositionals: false,
  });
  const settings = settingsFromEnvironment(env, values.settings);
  const reports = await runDoctorAll(settings, values.mailbox ? { mailbox: values.mailbox } : {});
  const ok = reports.every((r) => r.checks.every((c) => c.status === 'pass'));
  // One mailbox: one report (an object in JSON); several: one after another (an array).
  const json = reports.map((r) => ({
    mailbox: r.mailbox,
    ...(r.key && r.key !== 'default' ? { key: r.key } : {}),
    ok: r.checks.every((c) => c.status === 'pass'),
    checks: r.checks,
  }));
  const stdout = values.json
    ? `${JSON.stringify(json.length === 1 ? json[0] : json)}\n`
    : reports.map((r) => formatDoctorReport(r.mailbox, r.checks)).join('\n');
  return { code: ok ? 0 : 1, stdout, stderr: '' };
}

export async function main(argv: string[], env: Env = process.env): Promise<CliResult> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'check-sender':
        return checkSender(rest, env);
      case 'doctor':
        return await doctor(rest, env);
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
