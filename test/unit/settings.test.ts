import { readFileSync } from 'node:fs';

import { describe, expect, it } from 'vitest';

import { loadDeployment } from '../../shared/config/deployment';
import {
  AZURE_SDK_SETTINGS,
  DEFAULT_ACKNOWLEDGEMENT_TEXT,
  DEFAULT_DRAIN_LEASE_SECONDS,
  DEFAULT_REPLY_LEASE_SECONDS,
  DEPLOYMENT_SETTINGS,
  isNcrontab,
  parseSenderList,
  SETTING_NAMES,
} from '../../shared/config/schema';
import { ConfigError } from '../../shared/errors';
import { loadConfig } from '../helpers/config';

const base = {
  INBOXQ_MAILBOX: 'Agent@Company.com',
  INBOXQ_TENANT_ID: '72f988bf-86f1-41af-91ab-2d7cd011db47',
  INBOXQ_CLIENT_ID: '11111111-2222-3333-4444-555555555555',
  INBOXQ_KEYVAULT_URL: 'https://inboxq-kv.vault.azure.net/',
  AzureWebJobsStorage: 'UseDevelopmentStorage=true',
};

function problems(env: Record<string, string | undefined>): string[] {
  try {
    loadConfig(env);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return [...(err as ConfigError).problems];
  }
  throw new Error('expected a ConfigError');
}

describe('settings', () => {
  it('fills the Exchange Online defaults and normalises values', () => {
    const c = loadConfig(base);
    expect(c.mailbox).toBe('agent@company.com');
    expect(c.identity).toMatchObject({
      authorityHost: 'https://login.microsoftonline.com',
      exchangeResource: 'https://outlook.office365.com',
      credential: {
        kind: 'keyvault-secret',
        vaultUrl: 'https://inboxq-kv.vault.azure.net',
        secretName: 'inboxq-client-secret',
      },
    });
    expect(c.imap).toEqual({ host: 'outlook.office365.com', port: 993, secure: true, keepWarmMs: 300_000 });
    expect(c.smtp).toEqual({ host: 'smtp.office365.com', port: 587 });
    expect(c.drain).toMatchObject({
      processedAction: 'move',
      processedFolder: 'inboxq-processed',
      quarantineFolder: 'inboxq-quarantine',
    });
    expect(c.senderPolicy).toEqual({ authorizedSenders: [], trustedAuthservId: '', microsoftInternalFallback: false });
    expect(c.storage).toEqual({ kind: 'connection-string', connectionString: 'UseDevelopmentStorage=true' });
  });

  it.each([
    [{ INBOXQ_MAILBOX: undefined }, 'INBOXQ_MAILBOX is required'],
    [{ INBOXQ_MAILBOX: 'not-an-address' }, 'INBOXQ_MAILBOX must be an e-mail address'],
    [{ INBOXQ_TENANT_ID: 'common' }, 'INBOXQ_TENANT_ID must be your tenant id'],
    [{ INBOXQ_TENANT_ID: 'organizations' }, 'not common/organizations'],
    [{ INBOXQ_CLIENT_ID: 'my-app' }, 'INBOXQ_CLIENT_ID must be the application (client) id, a GUID'],
    [{ INBOXQ_KEYVAULT_URL: undefined }, 'INBOXQ_KEYVAULT_URL is required'],
    [{ INBOXQ_KEYVAULT_URL: 'http://kv.local' }, 'INBOXQ_KEYVAULT_URL must be an https:// URL'],
    [{ INBOXQ_AUTHORITY_HOST: 'login.microsoftonline.us' }, 'INBOXQ_AUTHORITY_HOST must be an https:// URL'],
    [{ INBOXQ_IMAP_PORT: '99999' }, 'INBOXQ_IMAP_PORT must be between 1 and 65535'],
    [{ INBOXQ_SMTP_PORT: 'five' }, 'INBOXQ_SMTP_PORT must be a whole number'],
    [{ INBOXQ_IMAP_SECURE: 'maybe' }, 'INBOXQ_IMAP_SECURE must be true or false'],
    [
      { INBOXQ_AUTHORIZED_SENDERS: 'alice@x.com, bob, *@*.com' },
      'INBOXQ_AUTHORIZED_SENDERS has entries that are neither an address nor *@domain: bob, *@*.com',
    ],
    [{ INBOXQ_PROCESSED_ACTION: 'archive' }, 'INBOXQ_PROCESSED_ACTION must be move or delete'],
    [{ INBOXQ_PROCESSED_FOLDER: 'INBOX' }, 'INBOXQ_PROCESSED_FOLDER must not be INBOX'],
    [{ INBOXQ_DRAIN_SCHEDULE: '*/5 * * * *' }, 'INBOXQ_DRAIN_SCHEDULE must be an NCRONTAB expression with six fields'],
    [{ INBOXQ_RUN_BUDGET_SECONDS: '1' }, 'INBOXQ_RUN_BUDGET_SECONDS must be between 5 and 3600'],
    [{ AzureWebJobsStorage: undefined }, 'AzureWebJobsStorage is required'],
    [{ INBOXQ_TLS_CA_FILE: '/nonexistent/ca.pem' }, "INBOXQ_TLS_CA_FILE names a file that can't be read (ENOENT)"],
  ])('%j is refused, naming the setting', (override, expected) => {
    expect(problems({ ...base, ...override }).join('\n')).toContain(expected);
  });

  it('lists every problem at once', () => {
    expect(problems({ INBOXQ_IMAP_PORT: 'x' })).toEqual(
      expect.arrayContaining([
        'INBOXQ_MAILBOX is required',
        'INBOXQ_TENANT_ID is required',
        'INBOXQ_CLIENT_ID is required',
        'INBOXQ_IMAP_PORT must be a whole number',
      ]),
    );
  });

  it('never echoes a secret in its errors', () => {
    const secret = 'Zq8~very.secret.value';
    try {
      loadConfig({ ...base, INBOXQ_CLIENT_SECRET: secret, INBOXQ_IMAP_PORT: 'bad' });
    } catch (err) {
      expect((err as Error).message).not.toContain(secret);
      return;
    }
    throw new Error('expected a ConfigError');
  });

  it('takes a local client secret from INBOXQ_CLIENT_SECRET before Key Vault', () => {
    expect(loadConfig({ ...base, INBOXQ_CLIENT_SECRET: 's' }).identity.credential).toEqual({
      kind: 'secret-setting',
      secret: 's',
    });
  });

  it('accepts identity-based storage connections', () => {
    const c = loadConfig({
      ...base,
      AzureWebJobsStorage: undefined,
      AzureWebJobsStorage__queueServiceUri: 'https://acct.queue.core.windows.net',
      AzureWebJobsStorage__tableServiceUri: 'https://acct.table.core.windows.net',
      AzureWebJobsStorage__blobServiceUri: 'https://acct.blob.core.windows.net',
      AzureWebJobsStorage__clientId: 'abc',
    });
    expect(c.storage).toMatchObject({ kind: 'identity', clientId: 'abc' });
  });

  it('keeps an empty trusted authserv-id as Microsoft 365 mode', () => {
    expect(loadConfig({ ...base, INBOXQ_TRUSTED_AUTHSERV_ID: '' }).senderPolicy.trustedAuthservId).toBe('');
    expect(loadConfig({ ...base, INBOXQ_TRUSTED_AUTHSERV_ID: 'MX.Example.COM' }).senderPolicy.trustedAuthservId).toBe(
      'mx.example.com',
    );
  });

  it('parses sender lists with commas, semicolons and spaces', () => {
    expect(parseSenderList(' Alice@X.com;*@Partner.org  bob@y.io,')).toEqual({
      senders: ['alice@x.com', '*@partner.org', 'bob@y.io'],
      invalid: [],
    });
  });

  it.each([
    ['0 */5 * * * *', true],
    ['0 0 8-18 * * Mon-Fri', true],
    ['*/5 * * * *', false],
    ['every minute', false],
  ])('NCRONTAB %s -> %s', (expr, ok) => expect(isNcrontab(expr)).toBe(ok));

  it('names every setting in local.settings.example.json', async () => {
    const example = JSON.parse(
      await import('node:fs').then((fs) => fs.readFileSync('local.settings.example.json', 'utf8')),
    ) as { Values: Record<string, string> };
    for (const name of SETTING_NAMES) expect(Object.keys(example.Values), name).toContain(name);
  });

  it('acknowledges new conversations by default, with a text that may be set (\\n for line breaks)', () => {
    expect(loadConfig(base).acknowledgement).toEqual({ enabled: true, text: DEFAULT_ACKNOWLEDGEMENT_TEXT });
    expect(loadConfig({ ...base, INBOXQ_ACKNOWLEDGE: 'false' }).acknowledgement.enabled).toBe(false);
    expect(
      loadConfig({ ...base, INBOXQ_ACKNOWLEDGEMENT_TEXT: 'Got it: {taskId}.\\nThanks.' }).acknowledgement.text,
    ).toBe('Got it: {taskId}.\nThanks.');
    expect(problems({ ...base, INBOXQ_ACKNOWLEDGEMENT_TEXT: 'Got {task} for {name}' })).toEqual([
      'INBOXQ_ACKNOWLEDGEMENT_TEXT uses unknown placeholders {task}, {name}; it may use {taskId}, {conversationId}, {subject}, {mailbox}',
    ]);
  });

  it("puts one mailbox's tasks on the tasks queue, unless told otherwise", () => {
    expect(loadConfig(base)).toMatchObject({ key: 'default', tasksQueue: 'tasks' });
    expect(loadConfig({ ...base, INBOXQ_TASKS_QUEUE: 'agent-tasks' }).tasksQueue).toBe('agent-tasks');
    expect(problems({ ...base, INBOXQ_TASKS_QUEUE: 'replies' })[0]).toContain(
      "INBOXQ_TASKS_QUEUE must not be one of inboxq's own queues",
    );
    expect(problems({ ...base, INBOXQ_TASKS_QUEUE: 'Tasks_1' })[0]).toContain(
      'INBOXQ_TASKS_QUEUE must be a Storage queue name',
    );
  });
});

describe('several mailboxes', () => {
  const two = {
    ...base,
    INBOXQ_MAILBOX: undefined,
    INBOXQ_MAILBOXES: 'sales, Support',
    INBOXQ_AUTHORIZED_SENDERS: '*@company.com',
    INBOXQ_SALES__MAILBOX: 'sales@company.com',
    INBOXQ_SUPPORT__MAILBOX: 'support@company.com',
    INBOXQ_SUPPORT__CLIENT_ID: '99999999-2222-3333-4444-555555555555',
    INBOXQ_SUPPORT__AUTHORIZED_SENDERS: '*@customer.example',
    INBOXQ_SUPPORT__PROCESSED_FOLDER: 'Done',
  };

  function deploymentProblems(env: Record<string, string | undefined>): string[] {
    try {
      loadDeployment(env);
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      return [...(err as ConfigError).problems];
    }
    throw new Error('expected a ConfigError');
  }

  it('each takes the shared settings, overridden by INBOXQ_<KEY>__<SETTING>, and gets its own tasks queue', () => {
    const [sales, support] = loadDeployment(two).mailboxes;
    expect(sales).toMatchObject({
      key: 'sales',
      mailbox: 'sales@company.com',
      tasksQueue: 'tasks-sales',
      senderPolicy: { authorizedSenders: ['*@company.com'] },
    });
    expect(sales!.identity.clientId).toBe('11111111-2222-3333-4444-555555555555');
    expect(sales!.drain.processedFolder).toBe('inboxq-processed');
    expect(support).toMatchObject({
      key: 'support',
      mailbox: 'support@company.com',
      tasksQueue: 'tasks-support',
      senderPolicy: { authorizedSenders: ['*@customer.example'] },
    });
    expect(support!.identity.clientId).toBe('99999999-2222-3333-4444-555555555555');
    expect(support!.drain.processedFolder).toBe('Done');
    expect(loadConfig(two, 'support@company.com').key).toBe('support');
    expect(loadConfig(two, 'sales').mailbox).toBe('sales@company.com');
    expect(() => loadConfig(two)).toThrow('this deployment serves 2 mailboxes (sales, support): name one');
  });

  it('names the mailbox and the app setting of every problem', () => {
    expect(
      deploymentProblems({
        ...two,
        INBOXQ_SALES__MAILBOX: undefined,
        INBOXQ_SUPPORT__IMAP_PORT: 'x',
        INBOXQ_SUPPORT__AUTHORIZED_SENDERS: 'bob',
      }),
    ).toEqual([
      'mailbox "sales": INBOXQ_SALES__MAILBOX is required: the address of mailbox "sales"',
      'mailbox "support": INBOXQ_SUPPORT__IMAP_PORT must be a whole number',
    ]);
    expect(deploymentProblems({ ...two, INBOXQ_SUPPORT__AUTHORIZED_SENDERS: 'bob' })).toEqual([
      'mailbox "support": INBOXQ_SUPPORT__AUTHORIZED_SENDERS has entries that are neither an address nor *@domain: bob',
    ]);
    // A shared setting at fault is named as such, once per mailbox that uses it.
    const shared = deploymentProblems({ ...two, INBOXQ_TENANT_ID: 'common' }).filter((p) =>
      p.includes('INBOXQ_TENANT_ID must be your tenant id'),
    );
    expect(shared.map((p) => p.slice(0, p.indexOf(':')))).toEqual(['mailbox "sales"', 'mailbox "support"']);
  });

  it('refuses two mailboxes on one inbox', () => {
    expect(deploymentProblems({ ...two, INBOXQ_SUPPORT__MAILBOX: 'Sales@Company.com' })).toEqual([
      'mailboxes "sales" and "support" both point at the inbox of sales@company.com (INBOXQ_SALES__MAILBOX, INBOXQ_SUPPORT__MAILBOX): give each mailbox its own address',
    ]);
  });

  it('refuses per-mailbox settings for unknown mailboxes, deployment settings and misspelt names', () => {
    expect(
      deploymentProblems({
        ...two,
        INBOXQ_SALSE__MAILBOX: 'x@company.com',
        INBOXQ_SALES__DRAIN_SCHEDULE: '0 * * * * *',
        INBOXQ_SALES__AUTHORISED_SENDERS: 'a@b.com',
      }),
    ).toEqual([
      'INBOXQ_SALSE__MAILBOX names mailbox "salse", which INBOXQ_MAILBOXES does not list (sales, support)',
      "INBOXQ_SALES__DRAIN_SCHEDULE: INBOXQ_DRAIN_SCHEDULE applies to the whole deployment and can't be set per mailbox",
      'INBOXQ_SALES__AUTHORISED_SENDERS: inboxq has no setting INBOXQ_AUTHORISED_SENDERS',
    ]);
    expect(deploymentProblems({ ...two, INBOXQ_MAILBOXES: 'sales, sales, 2nd' })).toEqual(
      expect.arrayContaining([
        'INBOXQ_MAILBOXES lists "sales" twice',
        'INBOXQ_MAILBOXES: "2nd" is not a mailbox key (a letter, then up to 23 letters or digits)',
      ]),
    );
    expect(problems({ ...base, INBOXQ_SALES__MAILBOX: 'sales@company.com' })[0]).toContain(
      'INBOXQ_SALES__MAILBOX: per-mailbox settings need INBOXQ_MAILBOXES',
    );
    expect(deploymentProblems({ ...two, INBOXQ_MAILBOX: 'agent@company.com' })).toEqual([
      'INBOXQ_MAILBOX is set, but with INBOXQ_MAILBOXES each mailbox names its address in INBOXQ_<KEY>__MAILBOX: remove INBOXQ_MAILBOX',
    ]);
  });
});

describe('settings that each do one thing', () => {
  it('the leases default to 5 minutes (drain) and 60 s (reply), and can be set, per mailbox too', () => {
    expect(loadConfig(base).drain.leaseMs).toBe(DEFAULT_DRAIN_LEASE_SECONDS * 1000);
    expect(loadConfig(base).reply.leaseMs).toBe(DEFAULT_REPLY_LEASE_SECONDS * 1000);
    expect(DEFAULT_DRAIN_LEASE_SECONDS).toBe(300);
    expect(DEFAULT_REPLY_LEASE_SECONDS).toBe(60);
    const set = loadConfig({ ...base, INBOXQ_DRAIN_LEASE_SECONDS: '90', INBOXQ_REPLY_LEASE_SECONDS: '20' });
    expect([set.drain.leaseMs, set.reply.leaseMs]).toEqual([90_000, 20_000]);
    const { mailboxes } = loadDeployment({
      ...base,
      INBOXQ_MAILBOX: undefined,
      INBOXQ_MAILBOXES: 'a,b',
      INBOXQ_A__MAILBOX: 'a@company.com',
      INBOXQ_B__MAILBOX: 'b@company.com',
      INBOXQ_B__DRAIN_LEASE_SECONDS: '45',
    });
    expect(mailboxes.map((m) => m.drain.leaseMs)).toEqual([300_000, 45_000]);
  });

  it.each([
    ['INBOXQ_DRAIN_LEASE_SECONDS', '29', 'INBOXQ_DRAIN_LEASE_SECONDS must be between 30 and 3600'],
    ['INBOXQ_REPLY_LEASE_SECONDS', '5', 'INBOXQ_REPLY_LEASE_SECONDS must be between 10 and 3600'],
    ['INBOXQ_REPLY_LEASE_SECONDS', 'soon', 'INBOXQ_REPLY_LEASE_SECONDS must be a whole number'],
  ])('%s=%s is refused, naming it', (name, value, message) => {
    expect(() => loadConfig({ ...base, [name]: value })).toThrow(message);
  });

  it("the managed-identity credential's identity is INBOXQ_MANAGED_IDENTITY_CLIENT_ID, a user-assigned one, never the SDK's AZURE_CLIENT_ID", () => {
    const mi = { ...base, INBOXQ_CLIENT_CREDENTIAL: 'managed-identity' };
    // A system-assigned identity can't be a federated credential: the setting is required.
    expect(() => loadConfig({ ...mi, AZURE_CLIENT_ID: '11111111-1111-1111-1111-111111111111' })).toThrow(
      'INBOXQ_MANAGED_IDENTITY_CLIENT_ID is required with INBOXQ_CLIENT_CREDENTIAL=managed-identity: the client id of the user-assigned managed identity',
    );
    const own = loadConfig({ ...mi, INBOXQ_MANAGED_IDENTITY_CLIENT_ID: '22222222-2222-2222-2222-22222222222A' });
    expect(own.identity.credential).toEqual({
      kind: 'managed-identity',
      identityClientId: '22222222-2222-2222-2222-22222222222a',
    });
    expect(() => loadConfig({ ...mi, INBOXQ_MANAGED_IDENTITY_CLIENT_ID: 'my-identity' })).toThrow(
      'INBOXQ_MANAGED_IDENTITY_CLIENT_ID must be the client id (a GUID) of a user-assigned managed identity',
    );
  });

  it('the vault challenge check and instance discovery are two switches', () => {
    expect(loadConfig(base).keyVault).toEqual({ verifyChallengeResource: true, instanceDiscovery: true });
    expect(loadConfig({ ...base, INBOXQ_KEYVAULT_VERIFY_CHALLENGE_RESOURCE: 'false' }).keyVault).toEqual({
      verifyChallengeResource: false,
      instanceDiscovery: true,
    });
    expect(loadConfig({ ...base, INBOXQ_KEYVAULT_INSTANCE_DISCOVERY: 'false' }).keyVault).toEqual({
      verifyChallengeResource: true,
      instanceDiscovery: false,
    });
  });

  it("the README's settings tables name every setting inboxq and the Azure SDK read, and nothing else", () => {
    const readme = readFileSync('README.md', 'utf8');
    const section = readme.slice(
      readme.indexOf('## Settings'),
      readme.indexOf('\n## ', readme.indexOf('## Settings') + 1),
    );
    const named = new Set<string>();
    for (const row of section.split('\n').filter((l) => l.startsWith('| `'))) {
      const names = [...row.split('|')[1]!.matchAll(/`([A-Za-z_]+)`/g)].map((m) => m[1]!);
      const first = names[0]!;
      for (const n of names) {
        // `INBOXQ_IMAP_HOST` / `_PORT`, `AzureWebJobsStorage__queueServiceUri`, `__tableServiceUri`
        if (n.startsWith('__')) named.add(first.slice(0, first.indexOf('__')) + n);
        else if (n.startsWith('_')) named.add(first.slice(0, first.lastIndexOf('_')) + n);
        else named.add(n);
      }
    }
    const read = [...SETTING_NAMES, ...AZURE_SDK_SETTINGS];
    expect(read.filter((n) => !named.has(n))).toEqual([]);
    expect([...named].filter((n) => !read.includes(n))).toEqual([]);
  });

  it('the example settings name the Azure SDK settings too', () => {
    const example = JSON.parse(readFileSync('local.settings.example.json', 'utf8')) as { Values: object };
    for (const name of AZURE_SDK_SETTINGS) expect(Object.keys(example.Values), name).toContain(name);
  });
});

describe('docs/mailboxes.md', () => {
  it('names every setting that belongs to the deployment', () => {
    const doc = readFileSync('docs/mailboxes.md', 'utf8');
    const missing = [...DEPLOYMENT_SETTINGS].filter(
      (s) => !s.startsWith('AzureWebJobsStorage') && !doc.includes(`\`${s}\``),
    );
    expect(missing).toEqual([]);
  });
});
