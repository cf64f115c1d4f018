/**
 * `inboxq doctor`: checks each mailbox's whole setup against the real services, in the order an
 * admin sets it up, and names the step that is wrong with the command that fixes it.
 *
 *   1 settings   2 credential   3 token   4 token roles   5 IMAP   6 SMTP   7 Sent folder
 *   8 mailbox size (where the server reports its quota)   9 storage
 *
 * Step 7 sends one mail from the mailbox to itself (sent-folder.ts); `skipSentCheck` leaves it out.
 * The steps follow docs/m365-setup.md; a failed step skips those that can't work without it.
 */
import { ManagedIdentityCredential } from '@azure/identity';

import { findMailbox, loadDeployment, notConfiguredHere } from '../config/deployment';
import type { Env, InboxqConfig } from '../config/types';
import { DRAIN_REQUESTS_QUEUE } from '../contract/messages';
import { CONVERSATIONS_TABLE } from '../conversation/conversations';
import { parseClientCertificate } from '../credentials/certificate';
import { readVaultSecret } from '../credentials/keyvault';
import {
  type ExchangeTokenProvider,
  FEDERATION_SCOPE,
  peekClaims,
  secretSourceName,
  tokenProviderFor,
} from '../credentials/token';
import { ConfigError, describeError, ImapError, InboxqError, SmtpError } from '../errors';
import { MAILBOXES_TABLE, MESSAGES_TABLE, REPLIES_TABLE } from '../ledger/rows';
import { MailboxSession } from '../mailbox/imap';
import { verifySmtp } from '../reply/smtp';
import { findMissingResources } from '../storage/clients';
import { silentLogger } from '../telemetry/log';
import { checkSentFolder } from './sent-folder';

export type StepName =
  'settings' | 'credential' | 'token' | 'token roles' | 'IMAP' | 'SMTP' | 'Sent folder' | 'mailbox size' | 'storage';

export interface DoctorCheck {
  step: StepName;
  status: 'pass' | 'fail' | 'skipped';
  detail: string;
  /** What to do, with the exact command where there is one. */
  fix?: string;
}

const IMAP_ROLE = 'IMAP.AccessAsApp';
const SMTP_ROLE = 'SMTP.SendAsApp';
/** The app roles a token should carry; SMTP.SendAsApp may instead come from RBAC for Applications. */
export const REQUIRED_ROLES = [IMAP_ROLE, SMTP_ROLE];
const ROLES_FIX =
  'in the app registration: API permissions → Add a permission → APIs my organization uses → "Office 365 Exchange Online" → Application permissions → IMAP.AccessAsApp and SMTP.SendAsApp → Grant admin consent (not Microsoft Graph\'s IMAP/SMTP permissions, which are delegated)';

function fixFor(err: unknown): string | undefined {
  return err instanceof InboxqError ? err.hint : undefined;
}

/** What failed, without the hint: the report prints the fix on its own line. */
function detailOf(err: unknown): string {
  return err instanceof InboxqError ? err.summary : describeError(err);
}

export interface MailboxReport {
  /** The mailbox's address (or what was asked for, when the settings fail). */
  mailbox: string;
  key: string;
  checks: DoctorCheck[];
}

const AFTER_SETTINGS: StepName[] = [
  'credential',
  'token',
  'token roles',
  'IMAP',
  'SMTP',
  'Sent folder',
  'mailbox size',
  'storage',
];
/** A mailbox this full is a warning: at its quota Exchange stops delivery to it and sending from it. */
export const QUOTA_WARNING = 0.9;

function settingsFailed(mailbox: string, detail: string, fix: string, why: string): MailboxReport {
  return {
    mailbox,
    key: '',
    checks: [
      { step: 'settings', status: 'fail', detail, fix },
      ...AFTER_SETTINGS.map((step): DoctorCheck => ({ step, status: 'skipped', detail: why })),
    ],
  };
}

/** Checks every mailbox of the deployment (or the one named by key or address), one after another. */
export interface DoctorOptions {
  mailbox?: string;
  /** Leave out step 7, which sends a mail from the mailbox to itself. */
  skipSentCheck?: boolean;
}

export async function runDoctorAll(env: Env, options: DoctorOptions = {}): Promise<MailboxReport[]> {
  let mailboxes: InboxqConfig[];
  try {
    mailboxes = loadDeployment(env).mailboxes;
  } catch (err) {
    const problems = err instanceof ConfigError ? err.problems.join('; ') : describeError(err);
    return [
      settingsFailed(
        options.mailbox ?? env['INBOXQ_MAILBOX'] ?? env['INBOXQ_MAILBOXES'] ?? '(no mailbox configured)',
        problems,
        'set the named app settings (local.settings.json, or az functionapp config appsettings set --name <app> --resource-group <rg> --settings NAME=value)',
        'the settings are not valid',
      ),
    ];
  }
  if (options.mailbox !== undefined) {
    const found = findMailbox(mailboxes, options.mailbox);
    if (!found) {
      return [
        settingsFailed(
          options.mailbox,
          notConfiguredHere(options.mailbox, mailboxes),
          'run doctor with the settings of that mailbox, or name one of these',
          'another mailbox is configured',
        ),
      ];
    }
    mailboxes = [found];
  }
  const reports: MailboxReport[] = [];
  for (const config of mailboxes)
    reports.push({ mailbox: config.mailbox, key: config.key, checks: await checkMailbox(config, options) });
  return reports;
}

/** The checks of one mailbox: the only one, or the one named by key or address. */
export async function runDoctor(env: Env, options: DoctorOptions = {}): Promise<DoctorCheck[]> {
  const reports = await runDoctorAll(env, options);
  if (reports.length > 1) {
    return settingsFailed(
      '',
      `these settings serve ${reports.length} mailboxes (${reports.map((r) => r.key).join(', ')})`,
      'name one with --mailbox',
      'no mailbox named',
    ).checks;
  }
  return reports[0]!.checks;
}

async function checkMailbox(config: InboxqConfig, options: DoctorOptions): Promise<DoctorCheck[]> {
  const checks: DoctorCheck[] = [];
  const skip = (steps: StepName[], why: string) =>
    steps.forEach((step) => checks.push({ step, status: 'skipped', detail: why }));
  const which = config.key === 'default' ? '' : ` (mailbox "${config.key}")`;
  checks.push({
    step: 'settings',
    status: 'pass',
    detail: `valid for ${config.mailbox}${which} (tenant ${config.identity.tenantId}, app ${config.identity.clientId})`,
  });

  const credentialOk = await checkCredential(config, checks);
  if (credentialOk) {
    const tokens = tokenProviderFor(config);
    const tokenOk = await checkToken(config, tokens, checks);
    if (tokenOk) {
      const imapOk = await checkImap(config, tokens, checks);
      const smtpOk = await checkSmtp(config, tokens, checks);
      if (options.skipSentCheck) skip(['Sent folder'], 'left out (--skip-sent-check)');
      else if (imapOk && smtpOk) await checkSent(config, tokens, checks);
      else skip(['Sent folder'], 'needs IMAP and SMTP');
      if (imapOk) await checkMailboxSize(config, tokens, checks);
      else skip(['mailbox size'], 'needs IMAP');
    } else skip(['token roles', 'IMAP', 'SMTP', 'Sent folder', 'mailbox size'], 'no token');
  } else
    skip(['token', 'token roles', 'IMAP', 'SMTP', 'Sent folder', 'mailbox size'], 'the credential is not readable');
  await checkStorage(config, checks);
  return checks;
}

async function checkCredential(config: InboxqConfig, checks: DoctorCheck[]): Promise<boolean> {
  const c = config.identity.credential;
  const name = secretSourceName(config);
  try {
    switch (c.kind) {
      case 'secret-setting':
        checks.push({
          step: 'credential',
          status: 'pass',
          detail: `client secret from ${name} (for local development only)`,
        });
        return true;
      case 'keyvault-secret': {
        const read = await readVaultSecret({
          vaultUrl: c.vaultUrl,
          secretName: c.secretName,
          mailbox: config.mailbox,
          verifyChallengeResource: config.keyVault.verifyChallengeResource,
          instanceDiscovery: config.keyVault.instanceDiscovery,
          tlsCa: config.tlsCa,
        });
        checks.push({ step: 'credential', status: 'pass', detail: `${name} is readable (version ${read.version})` });
        return true;
      }
      case 'keyvault-certificate': {
        const read = await readVaultSecret({
          vaultUrl: c.vaultUrl,
          secretName: c.certificateName,
          mailbox: config.mailbox,
          verifyChallengeResource: config.keyVault.verifyChallengeResource,
          instanceDiscovery: config.keyVault.instanceDiscovery,
          tlsCa: config.tlsCa,
        });
        const cert = parseClientCertificate(read.value);
        const days = Math.floor((cert.notAfter.getTime() - Date.now()) / 86_400_000);
        if (days < 0) {
          checks.push({
            step: 'credential',
            status: 'fail',
            detail: `${name} expired on ${cert.notAfter.toISOString().slice(0, 10)}`,
            fix: 'renew the certificate in Key Vault and upload its public part to the app registration',
          });
          return false;
        }
        checks.push({
          step: 'credential',
          status: 'pass',
          detail: `${name} is readable (thumbprint ${cert.thumbprintSha256.slice(0, 16)}…, valid ${days} more days)`,
        });
        return true;
      }
      case 'managed-identity': {
        const mi = new ManagedIdentityCredential({ clientId: c.identityClientId });
        const token = await mi.getToken(FEDERATION_SCOPE);
        const claims = peekClaims(token.token);
        checks.push({
          step: 'credential',
          status: 'pass',
          detail: `${name} gives a token for ${FEDERATION_SCOPE} (subject ${typeof claims['sub'] === 'string' ? claims['sub'] : '?'})`,
        });
        return true;
      }
    }
  } catch (err) {
    const fix =
      c.kind === 'managed-identity'
        ? 'assign a user-assigned managed identity to the Function App and set INBOXQ_MANAGED_IDENTITY_CLIENT_ID to its client id (azd provision does both)'
        : (fixFor(err) ?? `check ${name}`);
    checks.push({ step: 'credential', status: 'fail', detail: detailOf(err), fix });
    return false;
  }
}

async function checkToken(
  config: InboxqConfig,
  tokens: ExchangeTokenProvider,
  checks: DoctorCheck[],
): Promise<boolean> {
  let token: string;
  try {
    token = (await tokens.getToken({ forceRefresh: true })).token;
  } catch (err) {
    checks.push({ step: 'token', status: 'fail', detail: detailOf(err), fix: fixFor(err) });
    return false;
  }
  const claims = peekClaims(token);
  checks.push({
    step: 'token',
    status: 'pass',
    detail: `app-only token for ${String(claims['aud'])} from ${config.identity.authorityHost}`,
  });
  const roles = Array.isArray(claims['roles']) ? (claims['roles'] as string[]) : [];
  const missing = REQUIRED_ROLES.filter((r) => !roles.includes(r));
  if (missing.length === 1 && missing[0] === SMTP_ROLE) {
    // Microsoft's "SMTP Onboarding to App RBAC": sending granted by an RBAC for Applications role
    // assignment, and the SMTP.SendAsApp API permission must then not be added. Step SMTP decides.
    checks.push({
      step: 'token roles',
      status: 'pass',
      detail: `role ${IMAP_ROLE}; no ${SMTP_ROLE}, which is right when the mailbox's sending is granted through RBAC for Applications (the SMTP step checks it)`,
    });
  } else if (missing.length > 0) {
    checks.push({
      step: 'token roles',
      status: 'fail',
      detail: `the token lacks ${missing.join(' and ')} (it has ${roles.length ? roles.join(', ') : 'no roles'})`,
      fix: `${ROLES_FIX}; then: az ad app permission admin-consent --id ${config.identity.clientId}`,
    });
  } else {
    checks.push({ step: 'token roles', status: 'pass', detail: `roles ${REQUIRED_ROLES.join(', ')}` });
  }
  return true;
}

async function checkSent(config: InboxqConfig, tokens: ExchangeTokenProvider, checks: DoctorCheck[]): Promise<void> {
  try {
    checks.push({ step: 'Sent folder', ...(await checkSentFolder(config, tokens)) });
  } catch (err) {
    checks.push({ step: 'Sent folder', status: 'fail', detail: detailOf(err), fix: fixFor(err) });
  }
}

/** What a mailbox's use against its quota means: a failure from QUOTA_WARNING on. */
export function quotaVerdict(
  quota: { used: number; limit: number },
  config: Pick<InboxqConfig, 'drain'>,
): Pick<DoctorCheck, 'status' | 'detail' | 'fix'> {
  const share = quota.used / quota.limit;
  const mb = (bytes: number) => `${Math.round(bytes / 1048576)} MB`;
  const detail = `${mb(quota.used)} of ${mb(quota.limit)} used (${Math.round(share * 100)}%)`;
  if (share < QUOTA_WARNING) return { status: 'pass', detail };
  return {
    status: 'fail',
    detail: `${detail}: near its quota, where Exchange stops delivery to it and sending from it`,
    fix: `free the mailbox: INBOXQ_MAILBOX_RETENTION_DAYS (now ${config.drain.mailboxRetentionDays}; 0 keeps everything) deletes old mail from ${config.drain.processedFolder}, ${config.drain.quarantineFolder} and inboxq's replies in Sent Items; or empty them by hand`,
  };
}

/** The mailbox's size against its quota, where the server reports it over IMAP (QUOTA). */
async function checkMailboxSize(
  config: InboxqConfig,
  tokens: ExchangeTokenProvider,
  checks: DoctorCheck[],
): Promise<void> {
  const howToLook = `Get-MailboxStatistics -Identity ${config.mailbox} | Format-List TotalItemSize; Get-Mailbox -Identity ${config.mailbox} | Format-List ProhibitSendQuota, ProhibitSendReceiveQuota`;
  try {
    const session = await MailboxSession.open({ config, tokens, log: silentLogger, timeoutMs: 15_000 });
    let quota;
    try {
      quota = await session.storageQuota();
    } finally {
      await session.close();
    }
    if (!quota) {
      checks.push({
        step: 'mailbox size',
        status: 'skipped',
        detail: `the server does not report the mailbox's quota over IMAP; in Exchange Online PowerShell: ${howToLook}`,
      });
      return;
    }
    checks.push({ step: 'mailbox size', ...quotaVerdict(quota, config) });
  } catch (err) {
    checks.push({ step: 'mailbox size', status: 'fail', detail: detailOf(err), fix: fixFor(err) });
  }
}

async function checkImap(config: InboxqConfig, tokens: ExchangeTokenProvider, checks: DoctorCheck[]): Promise<boolean> {
  try {
    const session = await MailboxSession.open({ config, tokens, log: silentLogger, timeoutMs: 15_000 });
    const uids = await session.listUids();
    await session.close();
    checks.push({
      step: 'IMAP',
      status: 'pass',
      detail: `logged in to ${config.imap.host}:${config.imap.port} and selected INBOX (${uids.length} mails waiting)`,
    });
    return true;
  } catch (err) {
    let fix = fixFor(err);
    // IMAP switched off for the mailbox (Set-CASMailbox -ImapEnabled, often off through a CAS
    // mailbox plan) refuses the app's login much as a missing permission does: check it first.
    const imapEnabled = `Get-CASMailbox -Identity ${config.mailbox} | Format-List ImapEnabled; if False: Set-CASMailbox -Identity ${config.mailbox} -ImapEnabled $true`;
    if (err instanceof ImapError && err.failure === 'auth') {
      fix =
        `in Exchange Online PowerShell (Connect-ExchangeOnline): first ${imapEnabled}; then New-ServicePrincipal -AppId ${config.identity.clientId} -ObjectId <object id of the *Enterprise application*, not of the app registration>; ` +
        `Add-MailboxPermission -Identity ${config.mailbox} -User <that object id> -AccessRights FullAccess; a permission just given may take a few minutes to apply: run doctor again before changing anything else`;
    } else if (err instanceof ImapError && err.failure === 'not-connected') {
      fix = `first ${imapEnabled}; then Add-MailboxPermission -Identity ${config.mailbox} -User <object id of the Enterprise application> -AccessRights FullAccess`;
    }
    checks.push({ step: 'IMAP', status: 'fail', detail: detailOf(err), fix });
    return false;
  }
}

async function checkSmtp(config: InboxqConfig, tokens: ExchangeTokenProvider, checks: DoctorCheck[]): Promise<boolean> {
  try {
    await verifySmtp(config, tokens, silentLogger);
    checks.push({
      step: 'SMTP',
      status: 'pass',
      detail: `AUTH XOAUTH2 accepted by ${config.smtp.host}:${config.smtp.port}`,
    });
    return true;
  } catch (err) {
    let fix = fixFor(err);
    if (err instanceof SmtpError && err.failure === 'auth-disabled') {
      // The mailbox's setting overrides the tenant's: Microsoft recommends leaving SMTP AUTH off for
      // the tenant and turning it on for the mailboxes that need it.
      fix = `Set-CASMailbox -Identity ${config.mailbox} -SmtpClientAuthenticationDisabled $false (the mailbox's setting is enough; leave it off for the rest of the tenant)`;
    } else if (err instanceof SmtpError && err.failure === 'busy') {
      // Not a setup fault: inboxq sending a burst takes all 3 (and gives the third back a second after).
      fix = `every one of the mailbox's 3 SMTP connections is in use (inboxq sending a burst of replies uses all 3; another client sending as ${config.mailbox} holds some too): run inboxq doctor again once the replies queue is drained`;
    } else if (err instanceof SmtpError && err.failure === 'auth') {
      fix = `the app may send as the mailbox by one of two routes: the SMTP.SendAsApp API permission with admin consent (step token roles) and the mailbox permission, Add-MailboxPermission -Identity ${config.mailbox} -User <object id of the Enterprise application> -AccessRights FullAccess; or RBAC for Applications, New-ManagementRoleAssignment -App <service principal's ServiceId> -Role "Application SMTP.SendAsApp" -CustomResourceScope <a management scope holding ${config.mailbox}>, without the API permission`;
    }
    checks.push({ step: 'SMTP', status: 'fail', detail: detailOf(err), fix });
    return false;
  }
}

async function checkStorage(config: InboxqConfig, checks: DoctorCheck[]): Promise<void> {
  try {
    const { missing } = await findMissingResources(
      config.storage,
      {
        queues: [DRAIN_REQUESTS_QUEUE, config.tasksQueue, config.repliesQueue, `${config.repliesQueue}-poison`],
        tables: [MESSAGES_TABLE, REPLIES_TABLE, MAILBOXES_TABLE, CONVERSATIONS_TABLE],
        containers: [config.mailContainer],
      },
      config.mailbox,
    );
    if (missing.length > 0) {
      const queue = missing.find((m) => m.startsWith('queue '))?.slice(6);
      checks.push({
        step: 'storage',
        status: 'fail',
        detail: `missing: ${missing.join(', ')}`,
        fix: `azd provision creates them${queue ? `; or: az storage queue create --name ${queue} --account-name <account> --auth-mode login` : ''}`,
      });
      return;
    }
    checks.push({ step: 'storage', status: 'pass', detail: 'queues, tables and the mail container are reachable' });
  } catch (err) {
    checks.push({ step: 'storage', status: 'fail', detail: detailOf(err), fix: fixFor(err) });
  }
}

/** The report as a person reads it. */
export function formatDoctorReport(mailbox: string, checks: DoctorCheck[]): string {
  const mark = { pass: '✓', fail: '✗', skipped: '-' } as const;
  const lines = [`inboxq doctor: ${mailbox}`];
  checks.forEach((c, i) => {
    lines.push(`  ${mark[c.status]} ${i + 1}. ${c.step.padEnd(12)} ${c.detail}`);
    if (c.status === 'fail' && c.fix) lines.push(`       fix: ${c.fix}`);
  });
  const failed = checks.filter((c) => c.status === 'fail');
  lines.push(
    failed.length === 0
      ? 'All checks passed.'
      : `${failed.length} check${failed.length === 1 ? '' : 's'} failed; fix the first one first (docs/m365-setup.md).`,
  );
  return `${lines.join('\n')}\n`;
}
