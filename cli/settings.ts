/**
 * What every command shares: its result, the usage error, and the settings as the Functions host
 * would see them (the environment over the Values of a --settings file, with the file's limits).
 */
import { readFileSync } from 'node:fs';

import { parse as parseJson, type ParseError, printParseErrorCode } from 'jsonc-parser';

import type { Env } from '../shared/config/types';
import { InboxqError } from '../shared/errors';

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** The options every command on a deployment's mailboxes takes (parseArgs). */
export const MAILBOX_OPTIONS = {
  mailbox: { type: 'string' },
  settings: { type: 'string' },
  json: { type: 'boolean' },
} as const;

/**
 * Characters a terminal acts on or reorders that JSON.stringify leaves raw: DEL, the C1 controls
 * (U+009B is a one-byte CSI), bidi marks, embeddings, overrides and isolates, and the line and
 * paragraph separators. (It escapes C0 itself.)
 */
const TERMINAL_UNSAFE = /[\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

/**
 * A command's --json output, one line: what a sender wrote (a subject, an address) can't drive the
 * operator's terminal, and parses back to the very same strings (\uXXXX escapes are JSON).
 */
export function jsonLine(value: unknown): string {
  return `${JSON.stringify(value).replace(TERMINAL_UNSAFE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)}\n`;
}

/** The command line or the settings file it names is wrong: printed with the usage, exit 2. */
export class UsageError extends InboxqError {
  override readonly code = 'USAGE';
}

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
