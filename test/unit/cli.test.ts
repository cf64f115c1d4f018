/** `inboxq`: check-sender's JSON and exit codes on saved .eml files, every verb's --help, and --json output safe for a terminal. */
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { describe, expect, it } from 'vitest';

import { main, settingsFromEnvironment, verbUsage } from '../../cli/inboxq';
import { jsonLine } from '../../cli/settings';

const dir = mkdtempSync(path.join(os.tmpdir(), 'inboxq-cli-'));
function file(name: string, content: string): string {
  const p = path.join(dir, name);
  writeFileSync(p, content);
  return p;
}
const policy = file(
  'policy.json',
  JSON.stringify({ authorizedSenders: ['*@example.com'], trustedAuthservId: '', microsoftInternalFallback: true }),
);
const pass = 'test/fixtures/eop-pass.eml';

describe('inboxq check-sender', () => {
  it('accepts with exit 0 and explains why', async () => {
    const r = await main(['check-sender', '--policy', policy, pass]);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({
      verdict: 'accept',
      sender: 'alice@example.com',
      reasons: [
        'DMARC pass for example.com in the first Authentication-Results header (no authserv-id, as Microsoft 365 writes it)',
        'alice@example.com is an authorized sender',
      ],
    });
  });

  it('rejects with exit 1', async () => {
    const strict = file(
      'strict.json',
      JSON.stringify({
        authorizedSenders: ['bob@example.com'],
        trustedAuthservId: '',
        microsoftInternalFallback: false,
      }),
    );
    const r = await main(['check-sender', '--policy', strict, pass]);
    expect(r.code).toBe(1);
    const out = JSON.parse(r.stdout);
    expect(out.verdict).toBe('reject');
    expect(out.sender).toBe('alice@example.com');
    expect(out.reasons[0]).toContain('alice@example.com is not on the authorized-senders list');
  });

  it('rejects a file that is not a mail with exit 1 and sender null', async () => {
    const r = await main(['check-sender', '--policy', policy, file('junk.eml', '\u0000\u0001binary')]);
    expect(r.code).toBe(1);
    expect(JSON.parse(r.stdout)).toMatchObject({ verdict: 'reject', sender: null });
  });

  it('takes the policy of the configured mailbox with --mailbox', async () => {
    const env = {
      INBOXQ_MAILBOX: 'agent@contoso.com',
      INBOXQ_TENANT_ID: '72f988bf-86f1-41af-91ab-2d7cd011db47',
      INBOXQ_CLIENT_ID: '11111111-2222-3333-4444-555555555555',
      INBOXQ_KEYVAULT_URL: 'https://kv.vault.azure.net',
      AzureWebJobsStorage: 'UseDevelopmentStorage=true',
      INBOXQ_AUTHORIZED_SENDERS: 'alice@example.com',
    };
    expect((await main(['check-sender', '--mailbox', 'Agent@Contoso.com', pass], env)).code).toBe(0);
    const other = await main(['check-sender', '--mailbox', 'other@contoso.com', pass], env);
    expect(other.code).toBe(2);
    expect(other.stderr).toContain('mailbox other@contoso.com is not configured here');
  });

  it.each([
    [['check-sender', pass], 'give either --policy FILE or --mailbox ADDRESS'],
    [['check-sender', '--policy', policy], 'name exactly one message file'],
    [['check-sender', '--policy', policy, 'missing.eml'], "message file missing.eml can't be read: ENOENT"],
    [['check-sender', '--policy', 'missing.json', pass], "policy file missing.json can't be read as JSON: ENOENT"],
    [
      [
        'check-sender',
        '--policy',
        file('extra.json', '{"authorizedSenders":[],"trustedAuthservId":"","microsoftInternalFallback":true,"x":1}'),
        pass,
      ],
      'Unrecognized key',
    ],
    [
      [
        'check-sender',
        '--policy',
        file('types.json', '{"authorizedSenders":"a@b.c","trustedAuthservId":"","microsoftInternalFallback":"yes"}'),
        pass,
      ],
      'authorizedSenders',
    ],
    [['check-sender', '--bogus', pass], 'Unknown option'],
    [['frobnicate'], 'unknown command "frobnicate"'],
  ])('%j is a usage error (exit 2)', async (args, message) => {
    const r = await main(args);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain(message);
  });
});

describe('settings files for check-sender and doctor', () => {
  const base = {
    INBOXQ_MAILBOX: 'agent@example.com',
    INBOXQ_TENANT_ID: '11111111-2222-3333-4444-555555555555',
    INBOXQ_CLIENT_ID: '66666666-7777-8888-9999-000000000000',
    INBOXQ_KEYVAULT_URL: 'https://kv-inboxq.vault.azure.net',
    INBOXQ_KEYVAULT_SECRET_NAME: 'inboxq-client-secret',
    INBOXQ_AUTHORIZED_SENDERS: '*@example.com',
    AzureWebJobsStorage: 'UseDevelopmentStorage=true',
  };
  const settingsFile = (name: string, values: Record<string, string>) =>
    file(name, JSON.stringify({ IsEncrypted: false, Values: values }, null, 2));

  it('reads no local.settings.json by itself, from the current folder or anywhere', () => {
    const cwd = process.cwd();
    const here = mkdtempSync(path.join(os.tmpdir(), 'inboxq-cwd-'));
    writeFileSync(
      path.join(here, 'local.settings.json'),
      JSON.stringify({ Values: { INBOXQ_KEYVAULT_URL: 'https://attacker.example' } }),
    );
    process.chdir(here);
    try {
      expect(settingsFromEnvironment({ A: '1' })).toEqual({ A: '1' });
    } finally {
      process.chdir(cwd);
    }
  });

  it('uses a file named with --settings, the environment winning', async () => {
    const f = settingsFile('ok.settings.json', base);
    expect(settingsFromEnvironment({ INBOXQ_AUTHORIZED_SENDERS: 'bob@example.com' }, f)).toMatchObject({
      INBOXQ_MAILBOX: 'agent@example.com',
      INBOXQ_AUTHORIZED_SENDERS: 'bob@example.com',
    });
    const r = await main(['check-sender', '--mailbox', 'agent@example.com', '--settings', f, pass], {});
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).verdict).toBe('accept');
  });

  it.each([
    [
      'a vault outside the Key Vault DNS suffixes',
      { INBOXQ_KEYVAULT_URL: 'https://attacker.example' },
      'INBOXQ_KEYVAULT_URL in the settings file is not an https URL of an Azure Key Vault',
    ],
    [
      'a look-alike vault host',
      { INBOXQ_KEYVAULT_URL: 'https://vault.azure.net.attacker.example' },
      'INBOXQ_KEYVAULT_URL in the settings file',
    ],
    [
      'a vault over http',
      { INBOXQ_KEYVAULT_URL: 'http://kv.vault.azure.net' },
      'INBOXQ_KEYVAULT_URL in the settings file',
    ],
    [
      'a per-mailbox vault elsewhere',
      { INBOXQ_MAILBOXES: 'sales', INBOXQ_SALES__KEYVAULT_URL: 'https://127.0.0.1:8443' },
      'INBOXQ_SALES__KEYVAULT_URL in the settings file',
    ],
    [
      'the challenge check switched off',
      { INBOXQ_KEYVAULT_VERIFY_CHALLENGE_RESOURCE: 'false' },
      "INBOXQ_KEYVAULT_VERIFY_CHALLENGE_RESOURCE=false can't come from a settings file",
    ],
    [
      'a login host elsewhere',
      { INBOXQ_AUTHORITY_HOST: 'https://login.attacker.example' },
      'INBOXQ_AUTHORITY_HOST in the settings file is not an https URL of an Entra ID login host',
    ],
  ])('refuses %s, naming the setting (exit 2)', async (_name, values, message) => {
    const f = settingsFile(`bad-${Math.random().toString(36).slice(2)}.json`, { ...base, ...values });
    const r = await main(['doctor', '--settings', f], {});
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(message);
    expect(r.stderr).not.toContain('attacker.example');
  });

  it('accepts from the environment what it refuses from a file (the user set it)', () => {
    const env = {
      ...base,
      INBOXQ_KEYVAULT_URL: 'https://127.0.0.1:8443',
      INBOXQ_KEYVAULT_VERIFY_CHALLENGE_RESOURCE: 'false',
    };
    expect(
      settingsFromEnvironment(
        env,
        settingsFile('env-wins.json', { ...base, INBOXQ_KEYVAULT_URL: 'https://attacker.example' }),
      ),
    ).toMatchObject(env);
  });

  it('names the position of a JSON error and quotes nothing of the file', async () => {
    const secret = 'Sup3r-s3cret-value';
    const f = file(
      'broken.settings.json',
      `{\n  "Values": {\n    "INBOXQ_CLIENT_SECRET": "${secret}"\n    "INBOXQ_MAILBOX": "agent@example.com"\n  }\n}\n`,
    );
    const r = await main(['doctor', '--settings', f], {});
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`settings file ${f} is not valid JSON: CommaExpected at line 4, column 5`);
    expect(r.stderr).not.toContain(secret);
    expect(r.stderr).not.toContain('INBOXQ_MAILBOX');
  });
});

describe('every verb', () => {
  it.each(['check-sender', 'doctor', 'trace', 'status', 'release', 'replay'])(
    '%s --help and -h print its usage and exit 0, touching nothing',
    async (verb) => {
      for (const flag of ['--help', '-h']) {
        // No settings at all: the usage comes before anything is read or reached.
        const r = await main([verb, flag], {});
        expect(r).toEqual({ code: 0, stdout: `${verbUsage(verb)}\n`, stderr: '' });
        expect(r.stdout).toMatch(new RegExp(`^usage:\\n  inboxq ${verb} `));
        expect(r.stdout).not.toMatch(new RegExp(`inboxq (?!${verb} )[a-z-]+ `));
      }
      // After `--`, -h is an argument, not a request for help.
      expect((await main([verb, '--', '-h'], {})).code).not.toBe(0);
    },
  );
});

describe('--json output', () => {
  it('escapes what a terminal would act on in what a sender wrote, C1 and bidi included, and parses back to the same text', () => {
    const subject = 'Pay \u009b31m now \u202eevil\u202c \u2066x\u2069 \u0085 \u2028 \u001b[0m Grüße 你好';
    const line = jsonLine({ subject });
    expect(line.endsWith('\n')).toBe(true);
    // No control, bidi or separator character is left raw.
    const unsafe = [...line.slice(0, -1)].filter((c) => /[\p{Cc}\p{Bidi_Control}\u2028\u2029]/u.test(c));
    expect(unsafe).toEqual([]);
    expect(line).toContain('\\u009b31m');
    expect(line).toContain('\\u202eevil');
    expect(JSON.parse(line)).toEqual({ subject });
  });
});
