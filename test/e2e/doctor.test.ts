/**
 * `inboxq doctor`: each fault arranged on the local stack, and the step and fix it names.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { main } from '../../cli/inboxq';
import { LocalStack } from '../../localstack';
import { ImapFaultProxy } from '../../localstack/proxies';
import { mailboxResources } from '../../shared/contract/messages';
import { CONVERSATIONS_TABLE } from '../../shared/conversation/conversations';
import { type DoctorCheck, runDoctor } from '../../shared/doctor/doctor';
import { MAILBOXES_TABLE, MESSAGES_TABLE, REPLIES_TABLE } from '../../shared/ledger/rows';
import { createStorageClients } from '../../shared/storage/clients';

let stack: LocalStack;
beforeAll(async () => {
  stack = await LocalStack.start();
  // What the deployment provisions.
  const storage = createStorageClients({ kind: 'connection-string', connectionString: stack.azurite.connectionString });
  const own = [null, 'ops', 'hr'].map((key) => mailboxResources(key));
  for (const q of ['drain-requests', ...own.flatMap((m) => [m.tasksQueue, m.repliesQueue, `${m.repliesQueue}-poison`])])
    await storage.queue(q);
  for (const t of [MESSAGES_TABLE, REPLIES_TABLE, MAILBOXES_TABLE, CONVERSATIONS_TABLE]) await storage.table(t);
  for (const m of own) await storage.container(m.container);
});
afterAll(async () => {
  await stack?.stop();
});

const byStep = (checks: DoctorCheck[]) => Object.fromEntries(checks.map((c) => [c.step, c]));
const failed = (checks: DoctorCheck[]) => checks.filter((c) => c.status === 'fail').map((c) => c.step);

describe('inboxq doctor', () => {
  it('a correct setup passes every step, exit 0', async () => {
    const env = stack.settings('doctor-ok@company.test');
    const r = await main(['doctor'], env);
    expect(r.stdout).toContain('All checks passed.');
    expect(r.code).toBe(0);
    const json = JSON.parse((await main(['doctor', '--json'], env)).stdout) as { ok: boolean; checks: DoctorCheck[] };
    expect(json.ok).toBe(true);
    expect(json.checks.map((c) => c.step)).toEqual([
      'settings',
      'credential',
      'token',
      'token roles',
      'IMAP',
      'SMTP',
      'Sent folder',
      'mailbox size',
      'storage',
    ]);
    // The local Dovecot reports a 10 GB quota over IMAP.
    expect(byStep(json.checks)['mailbox size']).toMatchObject({ status: 'pass', detail: '0 MB of 10240 MB used (0%)' });
    const sent = byStep(json.checks)['Sent folder']!;
    expect(sent.detail).toMatch(/left a copy in Sent after \d+\.\d s \(the reply lease is 60 s\) and it arrived after/);
    // The test mail is cleaned up: nothing of it stays in INBOX, Sent or the processed folder.
    for (const folder of ['INBOX', 'Sent', 'inboxq-processed'])
      expect(await stack.readFolder('doctor-ok@company.test', folder)).toHaveLength(0);
  });

  it('no copy in Sent: step Sent folder fails and says replies become at least once', async () => {
    const mailbox = 'doctor-nosent@company.test';
    stack.smtp.sentCopy.set(mailbox, 'none');
    const env = stack.settings(mailbox, { INBOXQ_REPLY_LEASE_SECONDS: '10' });
    const started = Date.now();
    const checks = await runDoctor(env);
    expect(failed(checks)).toEqual(['Sent folder']);
    const sent = byStep(checks)['Sent folder']!;
    expect(sent.detail).toContain('left no copy in Sent within the reply lease (10 s); it arrived after');
    expect(sent.detail).toContain('replies are at least once, not exactly once');
    expect(sent.fix).toContain('INBOXQ_REPLY_LEASE_SECONDS');
    // It waited out the lease, and no longer.
    expect(Date.now() - started).toBeGreaterThanOrEqual(10_000);
    expect(await stack.readFolder(mailbox, 'INBOX')).toHaveLength(0);
    // Leaving it out: the step is skipped and nothing is sent.
    const before = stack.smtp.accepted.length;
    const skipped = byStep(await runDoctor(env, { skipSentCheck: true }))['Sent folder']!;
    expect(skipped.status).toBe('skipped');
    expect(stack.smtp.accepted.length).toBe(before);
  }, 30_000);

  it('a copy in Sent that comes after the reply lease: the step fails, naming the lease to raise', async () => {
    const mailbox = 'doctor-latesent@company.test';
    stack.smtp.sentCopy.set(mailbox, 13_000);
    const checks = await runDoctor(stack.settings(mailbox, { INBOXQ_REPLY_LEASE_SECONDS: '10' }));
    const sent = byStep(checks)['Sent folder']!;
    expect(sent.status).toBe('fail');
    expect(sent.fix).toContain('If the copy only comes late, raise INBOXQ_REPLY_LEASE_SECONDS above the delay');
    // The same server with a lease longer than the delay passes.
    stack.smtp.sentCopy.set(mailbox, 2_000);
    const again = byStep(await runDoctor(stack.settings(mailbox, { INBOXQ_REPLY_LEASE_SECONDS: '10' })))[
      'Sent folder'
    ]!;
    expect(again.status).toBe('pass');
    expect(again.detail).toMatch(/after [2-9]\.\d s/);
  }, 40_000);

  it('invalid settings: step settings, the setting named, the rest skipped', async () => {
    const checks = await runDoctor(stack.settings('doctor-settings@company.test', { INBOXQ_TENANT_ID: 'common' }));
    expect(failed(checks)).toEqual(['settings']);
    expect(checks[0]!.detail).toContain('INBOXQ_TENANT_ID');
    expect(checks.slice(1).every((c) => c.status === 'skipped')).toBe(true);
  });

  it('the client secret missing from Key Vault: step credential, with the az command', async () => {
    const c = byStep(
      await runDoctor(stack.settings('doctor-vault@company.test', { INBOXQ_CLIENT_SECRET_NAME: 'not-there' })),
    );
    expect(c['credential']).toMatchObject({ status: 'fail' });
    expect(c['credential']!.fix).toContain('az keyvault secret set');
    expect(c['token']!.status).toBe('skipped');
  });

  it('a wrong secret: step token, with the AADSTS code and what it means', async () => {
    const app = stack.registerApp();
    stack.vault.setSecret(app.secretName, 'not-the-secret');
    const c = byStep(await runDoctor(stack.settings('doctor-secret@company.test', app.settings)));
    expect(failed(Object.values(c))).toEqual(['token']);
    expect(c['token']!.detail).toContain('AADSTS7000215');
    expect(c['token']!.fix).toContain("store the secret's Value (not its Secret ID)");
  });

  it('a token without IMAP.AccessAsApp and SMTP.SendAsApp: step token roles, with the permissions to grant', async () => {
    const app = stack.registerApp([]);
    const c = byStep(await runDoctor(stack.settings('doctor-roles@company.test', app.settings)));
    expect(c['token roles']).toMatchObject({
      status: 'fail',
      detail: 'the token lacks IMAP.AccessAsApp and SMTP.SendAsApp (it has no roles)',
    });
    expect(c['token roles']!.fix).toContain('Office 365 Exchange Online');
    expect(c['token roles']!.fix).toContain(`az ad app permission admin-consent --id ${app.clientId}`);
    // Exchange refuses such a token too, and says so in the later steps.
    expect(c['IMAP']!.status).toBe('fail');
    expect(c['SMTP']!.status).toBe('fail');
  });

  it("SMTP through RBAC for Applications: no SMTP.SendAsApp in the token is accepted, and step SMTP decides (Microsoft's SMTP onboarding to App RBAC)", async () => {
    const mailbox = 'doctor-rbac@company.test';
    const app = stack.registerApp(['IMAP.AccessAsApp']);
    // Without the role assignment, Exchange refuses the SMTP login: the fix names both routes.
    let c = byStep(await runDoctor(stack.settings(mailbox, app.settings), { skipSentCheck: true }));
    expect(c['token roles']).toMatchObject({ status: 'pass' });
    expect(c['token roles']!.detail).toContain('no SMTP.SendAsApp, which is right when the mailbox');
    expect(c['SMTP']!.status).toBe('fail');
    expect(c['SMTP']!.fix).toContain('New-ManagementRoleAssignment -App');
    expect(c['SMTP']!.fix).toContain('-Role "Application SMTP.SendAsApp"');
    expect(c['SMTP']!.fix).toContain('Add-MailboxPermission');
    // With it (New-ManagementRoleAssignment … -CustomResourceScope …), every step passes.
    stack.smtp.appRbac.set(app.clientId, new Set([mailbox]));
    c = byStep(await runDoctor(stack.settings(mailbox, app.settings), { skipSentCheck: true }));
    expect(failed(Object.values(c))).toEqual([]);
    expect(c['SMTP']!.status).toBe('pass');
  });

  it('the IMAP server refusing the app: step IMAP, with New-ServicePrincipal (Enterprise application) and Add-MailboxPermission', async () => {
    const app = stack.registerApp();
    stack.idp.imapRefusedApps.add(app.clientId);
    const checks = await runDoctor(stack.settings('doctor-imap@company.test', app.settings));
    expect(failed(checks)).toEqual(['IMAP']);
    const imap = byStep(checks)['IMAP']!;
    expect(imap.detail).toContain('AUTHENTICATE XOAUTH2 failed');
    expect(imap.fix).toContain(
      `New-ServicePrincipal -AppId ${app.clientId} -ObjectId <object id of the *Enterprise application*`,
    );
    expect(imap.fix).toContain('Add-MailboxPermission -Identity doctor-imap@company.test');
  });

  it('SMTP AUTH disabled for the mailbox (535 5.7.139): step SMTP, with Set-CASMailbox', async () => {
    const mailbox = 'doctor-smtp@company.test';
    stack.smtp.smtpAuthDisabled.add(mailbox);
    const checks = await runDoctor(stack.settings(mailbox));
    expect(failed(checks)).toEqual(['SMTP']);
    const smtp = byStep(checks)['SMTP']!;
    expect(smtp.detail).toContain('5.7.139');
    expect(smtp.fix).toContain(`Set-CASMailbox -Identity ${mailbox} -SmtpClientAuthenticationDisabled $false`);
    // Per mailbox, as Microsoft recommends: no tenant-wide advice.
    expect(smtp.fix).not.toContain('Set-TransportConfig');
    expect(smtp.detail + smtp.fix).not.toContain('Set-TransportConfig');
  });

  it('every SMTP connection of the mailbox in use (432 4.3.2): step SMTP says so and to run again, no setup advice', async () => {
    const mailbox = 'doctor-busy@company.test';
    const holders = await Promise.all([1, 2, 3].map(() => stack.smtpConnection(mailbox)));
    stack.smtp.limitAnsweredAt = 'auth';
    try {
      const smtp = byStep(await runDoctor(stack.settings(mailbox), { skipSentCheck: true }))['SMTP']!;
      expect(smtp.status).toBe('fail');
      expect(smtp.detail).toContain('432');
      expect(smtp.fix).toContain("every one of the mailbox's 3 SMTP connections is in use");
      expect(smtp.fix).toContain('run inboxq doctor again');
      expect(smtp.fix).not.toMatch(/Add-MailboxPermission|SendAsApp|Set-CASMailbox/);
    } finally {
      stack.smtp.limitAnsweredAt = 'data';
      await Promise.all(holders.map((h) => h.close()));
    }
  });

  it('IMAP disabled for the mailbox ("authenticated but not connected"): step IMAP names Set-CASMailbox -ImapEnabled before the permission', async () => {
    const mailbox = 'doctor-imapoff@company.test';
    const proxy = new ImapFaultProxy(stack.dovecot.imapPort, stack.certs);
    await proxy.start();
    try {
      // What Exchange answers the SELECT of a mailbox whose IMAP is switched off (or not granted).
      proxy.answer(/SELECT/, 'BAD User is authenticated but not connected.');
      const checks = await runDoctor(stack.settings(mailbox, { INBOXQ_IMAP_PORT: String(proxy.port) }), {
        skipSentCheck: true,
      });
      expect(failed(checks)).toEqual(['IMAP']);
      const imap = byStep(checks)['IMAP']!;
      expect(imap.detail).toContain('User is authenticated but not connected');
      expect(imap.fix).toBe(
        `first Get-CASMailbox -Identity ${mailbox} | Format-List ImapEnabled; if False: Set-CASMailbox -Identity ${mailbox} -ImapEnabled $true; then Add-MailboxPermission -Identity ${mailbox} -User <object id of the Enterprise application> -AccessRights FullAccess`,
      );
    } finally {
      await proxy.stop();
    }
  });

  it('a Sent folder in another language, on a server that does not mark it \\Sent: found by its name; an unknown name is said', async () => {
    const proxy = new ImapFaultProxy(stack.dovecot.imapPort, stack.certs);
    await proxy.start();
    try {
      proxy.renameFolder('Sent', 'Gesendete Elemente');
      const mailbox = 'doctor-de@company.test';
      const checks = await runDoctor(stack.settings(mailbox, { INBOXQ_IMAP_PORT: String(proxy.port) }));
      const sent = byStep(checks)['Sent folder']!;
      expect(sent.status).toBe('pass');
      expect(sent.detail).toMatch(/^a test mail to itself left a copy in Gesendete Elemente after /);
    } finally {
      await proxy.stop();
    }
    const other = new ImapFaultProxy(stack.dovecot.imapPort, stack.certs);
    await other.start();
    try {
      other.renameFolder('Sent', 'Zzz Outbox Archive');
      const mailbox = 'doctor-xx@company.test';
      const checks = await runDoctor(stack.settings(mailbox, { INBOXQ_IMAP_PORT: String(other.port) }));
      const sent = byStep(checks)['Sent folder']!;
      expect(sent.status).toBe('fail');
      expect(sent.detail).toContain('the mailbox has no Sent folder inboxq can recognise');
      expect(await stack.readFolder(mailbox, 'INBOX')).toHaveLength(0);
    } finally {
      await other.stop();
    }
  });

  it('a missing queue: step storage, naming it and how to create it', async () => {
    const storage = createStorageClients({
      kind: 'connection-string',
      connectionString: stack.azurite.connectionString,
    });
    await (await storage.queue('replies-poison')).delete();
    try {
      const checks = await runDoctor(stack.settings('doctor-storage@company.test'));
      expect(failed(checks)).toEqual(['storage']);
      expect(byStep(checks)['storage']).toMatchObject({ detail: 'missing: queue replies-poison' });
      expect(byStep(checks)['storage']!.fix).toContain('az storage queue create --name replies-poison');
      expect((await main(['doctor'], stack.settings('doctor-storage@company.test'))).code).toBe(1);
    } finally {
      await createStorageClients({ kind: 'connection-string', connectionString: stack.azurite.connectionString }).queue(
        'replies-poison',
      );
    }
  });

  it('secretless without the federated credential: step token, with the az ad app federated-credential command', async () => {
    const app = stack.registerFederatedApp({ federated: false });
    const c = byStep(await runDoctor(stack.settings('doctor-mi@company.test', app.settings)));
    expect(c['credential']!.status).toBe('pass');
    expect(c['token']!.status).toBe('fail');
    expect(c['token']!.fix).toContain(`az ad app federated-credential create --id ${app.clientId}`);
  });

  it('several mailboxes: a report for each, the broken one naming its step, exit 1', async () => {
    const hr = stack.registerApp();
    stack.idp.imapRefusedApps.add(hr.clientId);
    const env = stack.settings('', {
      INBOXQ_MAILBOX: undefined,
      INBOXQ_MAILBOXES: 'ops,hr',
      INBOXQ_OPS__MAILBOX: 'doctor-ops@company.test',
      INBOXQ_HR__MAILBOX: 'doctor-hr@company.test',
      INBOXQ_HR__CLIENT_ID: hr.clientId,
      INBOXQ_HR__CLIENT_SECRET_NAME: hr.secretName,
    });
    const r = await main(['doctor'], env);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain(
      'inboxq doctor: doctor-ops@company.test\n  ✓ 1. settings     valid for doctor-ops@company.test (mailbox "ops")',
    );
    expect(r.stdout).toContain('inboxq doctor: doctor-hr@company.test');
    const reports = JSON.parse((await main(['doctor', '--json'], env)).stdout) as {
      mailbox: string;
      key: string;
      ok: boolean;
      checks: DoctorCheck[];
    }[];
    expect(reports.map((x) => [x.key, x.ok, failed(x.checks)])).toEqual([
      ['ops', true, []],
      ['hr', false, ['IMAP']],
    ]);
    const one = JSON.parse((await main(['doctor', '--json', '--mailbox', 'ops'], env)).stdout) as {
      mailbox: string;
      ok: boolean;
    };
    expect(one).toMatchObject({ mailbox: 'doctor-ops@company.test', ok: true });
    const unknown = await main(['doctor', '--mailbox', 'sales'], env);
    expect(unknown.stdout).toContain(
      'mailbox sales is not configured here (ops: doctor-ops@company.test, hr: doctor-hr@company.test)',
    );
  });
});
