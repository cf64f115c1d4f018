/**
 * A deployment's mailboxes: which ones INBOXQ_MAILBOXES lists, whose settings override which, and
 * the checks that span mailboxes (two of them draining one inbox). Each mailbox's own settings are
 * validated in mailbox.ts; every problem of every mailbox comes back in one ConfigError.
 */
import { ConfigError } from '../errors';
import { loadMailbox } from './mailbox';
import { DEPLOYMENT_SETTINGS, isSetting, mailboxSettingName } from './schema';
import type { Deployment, Env, InboxqConfig } from './types';

const MAILBOX_KEY = /^[a-z][a-z0-9]{0,23}$/;
const OVERRIDE = /^INBOXQ_([A-Z0-9]+)__([A-Z0-9_]+)$/;

/** The entries of INBOXQ_MAILBOXES as written (commas, semicolons or white space between them). */
function listedEntries(env: Env): string[] {
  return (env['INBOXQ_MAILBOXES'] ?? '').split(/[,;\s]+/).filter(Boolean);
}

/**
 * Validates the settings of every mailbox the deployment serves and returns their configs, or
 * throws one ConfigError listing every problem, each naming the mailbox and the app setting.
 */
export function loadDeployment(env: Env): Deployment {
  const listed = env['INBOXQ_MAILBOXES']?.trim();
  const overrides = Object.keys(env).filter((k) => OVERRIDE.test(k) && env[k] !== undefined);
  if (!listed) {
    if (overrides.length > 0) {
      throw new ConfigError([
        `${overrides.join(', ')}: per-mailbox settings need INBOXQ_MAILBOXES, the list of mailbox keys (e.g. INBOXQ_MAILBOXES=sales,support); with one mailbox, set INBOXQ_* directly`,
      ]);
    }
    return { mailboxes: [loadMailbox(env, 'default', null)] };
  }

  const problems: string[] = [];
  if (env['INBOXQ_MAILBOX']) {
    problems.push(
      'INBOXQ_MAILBOX is set, but with INBOXQ_MAILBOXES each mailbox names its address in INBOXQ_<KEY>__MAILBOX: remove INBOXQ_MAILBOX',
    );
  }
  const keys: string[] = [];
  for (const part of listedEntries(env)) {
    const key = part.toLowerCase();
    if (!MAILBOX_KEY.test(key))
      problems.push(`INBOXQ_MAILBOXES: "${part}" is not a mailbox key (a letter, then up to 23 letters or digits)`);
    else if (keys.includes(key)) problems.push(`INBOXQ_MAILBOXES lists "${key}" twice`);
    else keys.push(key);
  }
  for (const name of overrides) {
    const [, key, rest] = OVERRIDE.exec(name)!;
    const setting = `INBOXQ_${rest}`;
    if (!keys.includes(key!.toLowerCase()))
      problems.push(
        `${name} names mailbox "${key!.toLowerCase()}", which INBOXQ_MAILBOXES does not list (${keys.join(', ')})`,
      );
    else if (DEPLOYMENT_SETTINGS.has(setting))
      problems.push(`${name}: ${setting} applies to the whole deployment and can't be set per mailbox`);
    else if (!isSetting(setting)) problems.push(`${name}: inboxq has no setting ${setting}`);
  }

  const mailboxes: InboxqConfig[] = [];
  for (const key of keys) {
    try {
      mailboxes.push(loadMailbox(env, key, key));
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      problems.push(...err.problems.map((p) => `mailbox "${key}": ${p}`));
    }
  }
  // Two drains of one inbox would take each other's mail: every mailbox needs an inbox of its own.
  for (let i = 0; i < mailboxes.length; i++) {
    for (let j = i + 1; j < mailboxes.length; j++) {
      const a = mailboxes[i]!;
      const b = mailboxes[j]!;
      if (a.mailbox === b.mailbox && a.imap.host.toLowerCase() === b.imap.host.toLowerCase()) {
        problems.push(
          `mailboxes "${a.key}" and "${b.key}" both point at the inbox of ${a.mailbox} (${mailboxSettingName(a.key, 'INBOXQ_MAILBOX')}, ${mailboxSettingName(b.key, 'INBOXQ_MAILBOX')}): give each mailbox its own address`,
        );
      }
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return { mailboxes };
}

/**
 * The mailbox keys INBOXQ_MAILBOXES lists, as far as they are keys (an empty list: a deployment of
 * one mailbox). What the app registers a reply function per mailbox from, when it loads; the
 * settings themselves are validated by loadDeployment, which reports what is wrong.
 */
export function listedMailboxKeys(env: Env): string[] {
  const keys = listedEntries(env)
    .map((k) => k.toLowerCase())
    .filter((k) => MAILBOX_KEY.test(k));
  return [...new Set(keys)];
}

/** The mailbox named by its key or its address, case aside. */
export function findMailbox<T extends Pick<InboxqConfig, 'key' | 'mailbox'>>(
  mailboxes: readonly T[],
  keyOrAddress: string,
): T | undefined {
  const wanted = keyOrAddress.trim().toLowerCase();
  return mailboxes.find((m) => m.key === wanted || m.mailbox === wanted);
}

/** "mailbox X is not configured here (INBOXQ_MAILBOX is a@b)" or "(sales: a@b, support: c@d)". */
export function notConfiguredHere(
  keyOrAddress: string,
  mailboxes: readonly Pick<InboxqConfig, 'key' | 'mailbox'>[],
): string {
  const served = mailboxes
    .map((m) => (m.key === 'default' ? `INBOXQ_MAILBOX is ${m.mailbox}` : `${m.key}: ${m.mailbox}`))
    .join(', ');
  return `mailbox ${keyOrAddress} is not configured here (${served})`;
}
