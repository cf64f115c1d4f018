/** `inboxq check-sender`: the JSON it prints and its exit codes, on saved .eml files. */
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { main } from '../../cli/inboxq';

const dir = mkdtempSync(path.join(os.tmpdir(), 'inboxq-cli-'));
function file(name: string, content: string): string {
  const p = path.join(dir, name);
  writeFileSync(p, content);
  return p;
}
const policy = file('policy.json', JSON.stringify({ authorizedSenders: ['*@example.com'], trustedAuthservId: '', microsoftInternalFallback: true }));
const pass = 'test/fixtures/eop-pass.eml';

describe('inboxq check-sender', () => {
  it('accepts with exit 0 and explains why', async () => {
    const r = await main(['check-sender', '--policy', policy, pass]);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({
      verdict: 'accept',
      sender: 'alice@example.com',
      reasons: ['DMARC pass for example.com in the first Authentication-Results header (no authserv-id, as Microsoft 365 writes it)', 'alice@example.com is an authorized sender'],
    });
  });

  it('rejects with exit 1', async () => {
    const strict = file('strict.json', JSON.stringify({ authorizedSenders: ['bob@example.com'], trustedAuthservId: '', microsoftInternalFallback: false }));
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
    [['check-sender', '--policy', file('extra.json', '{"authorizedSenders":[],"trustedAuthservId":"","microsoftInternalFallback":true,"x":1}'), pass], 'Unrecognized key'],
    [['check-sender', '--policy', file('types.json', '{"authorizedSenders":"a@b.c","trustedAuthservId":"","microsoftInternalFallback":"yes"}'), pass], 'authorizedSenders'],
    [['check-sender', '--bogus', pass], 'Unknown option'],
    [['frobnicate'], 'unknown command "frobnicate"'],
  ])('%j is a usage error (exit 2)', async (args, message) => {
    const r = await main(args as string[]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain(message);
  });
});
