import { describe, expect, it } from 'vitest';
import { isNcrontab, loadConfig, parseSenderList, SETTING_NAMES } from '../../shared/config/settings';
import { ConfigError } from '../../shared/errors';

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
      credential: { kind: 'keyvault-secret', vaultUrl: 'https://inboxq-kv.vault.azure.net', secretName: 'inboxq-client-secret' },
    });
    expect(c.imap).toEqual({ host: 'outlook.office365.com', port: 993, secure: true });
    expect(c.smtp).toEqual({ host: 'smtp.office365.com', port: 587 });
    expect(c.drain).toMatchObject({ processedAction: 'move', processedFolder: 'inboxq-processed', quarantineFolder: 'inboxq-quarantine' });
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
    [{ INBOXQ_AUTHORIZED_SENDERS: 'alice@x.com, bob, *@*.com' }, 'INBOXQ_AUTHORIZED_SENDERS has entries that are neither an address nor *@domain: bob, *@*.com'],
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
    expect(loadConfig({ ...base, INBOXQ_CLIENT_SECRET: 's' }).identity.credential).toEqual({ kind: 'secret-setting', secret: 's' });
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
    expect(loadConfig({ ...base, INBOXQ_TRUSTED_AUTHSERV_ID: 'MX.Example.COM' }).senderPolicy.trustedAuthservId).toBe('mx.example.com');
  });

  it('parses sender lists with commas, semicolons and spaces', () => {
    expect(parseSenderList(' Alice@X.com;*@Partner.org  bob@y.io,')).toEqual({ senders: ['alice@x.com', '*@partner.org', 'bob@y.io'], invalid: [] });
  });

  it.each([
    ['0 */5 * * * *', true],
    ['0 0 8-18 * * Mon-Fri', true],
    ['*/5 * * * *', false],
    ['every minute', false],
  ])('NCRONTAB %s -> %s', (expr, ok) => expect(isNcrontab(expr)).toBe(ok));

  it('names every setting in local.settings.example.json', async () => {
    const example = JSON.parse(await import('node:fs').then((fs) => fs.readFileSync('local.settings.example.json', 'utf8'))) as { Values: Record<string, string> };
    for (const name of SETTING_NAMES) expect(Object.keys(example.Values), name).toContain(name);
  });
});
