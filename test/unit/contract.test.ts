import { readFileSync } from 'node:fs';

import { describe, expect, it } from 'vitest';

import { readHostJson } from '../../localstack/host/settings';
import { contractJsonSchemas } from '../../shared/contract/json-schema';
import { decodeQueueMessage, encodeQueueMessage, replyMessageSchema } from '../../shared/contract/messages';
import { createHandlers } from '../../shared/host/handlers';
import { deriveTaskId } from '../../shared/identity/ids';
import { partitionKey } from '../../shared/ledger/rows';
import { replySubject } from '../../shared/reply/compose';
import { sanitizeFilename } from '../../shared/storage/blobs';
import { formatLine } from '../../shared/telemetry/log';

describe('the queue contract', () => {
  it('round-trips base64 JSON, and reads plain JSON from senders that do not encode', () => {
    const msg = { type: 'inboxq.reply', version: 1, text: 'é ✓' };
    expect(encodeQueueMessage(msg)).toBe(Buffer.from(JSON.stringify(msg)).toString('base64'));
    expect(decodeQueueMessage(encodeQueueMessage(msg))).toEqual(msg);
    expect(decodeQueueMessage(JSON.stringify(msg))).toEqual(msg);
  });

  it('defaults replyId and attachments, and refuses unknown versions', () => {
    const ok = replyMessageSchema.parse({
      type: 'inboxq.reply',
      version: 1,
      taskId: 'a'.repeat(32),
      mailbox: 'a@b.c',
      text: 'x',
    });
    expect(ok).toMatchObject({ replyId: 'reply', attachments: [] });
    expect(replyMessageSchema.safeParse({ ...ok, version: 2 }).success).toBe(false);
    expect(replyMessageSchema.safeParse({ ...ok, taskId: 'short' }).success).toBe(false);
    expect(replyMessageSchema.safeParse({ ...ok, replyId: '../x' }).success).toBe(false);
  });
});

describe('identities', () => {
  it('derives the same task id for the same mailbox and Message-ID, and another for anything else', () => {
    const key = Buffer.alloc(32, 1);
    const a = deriveTaskId(key, 'Agent@X.com', 'mid:<1@x>');
    expect(a).toMatch(/^[0-9a-f]{32}$/);
    expect(deriveTaskId(key, 'agent@x.com', 'mid:<1@x>')).toBe(a);
    expect(deriveTaskId(key, 'agent@x.com', 'mid:<2@x>')).not.toBe(a);
    expect(deriveTaskId(key, 'other@x.com', 'mid:<1@x>')).not.toBe(a);
    expect(deriveTaskId(Buffer.alloc(32, 2), 'agent@x.com', 'mid:<1@x>')).not.toBe(a);
  });

  it('escapes characters Table Storage keys refuse', () => {
    expect(partitionKey("o'neil/#?\\@x.com")).not.toMatch(/[/\\#?']/);
  });
});

describe('small rules', () => {
  it.each([
    ['Report', 'Re: Report'],
    ['RE: Report', 'RE: Report'],
    ['AW: Bericht', 'AW: Bericht'],
    ['', 'Re: your message'],
  ])('reply subject of %j is %j', (s, expected) => expect(replySubject(s)).toBe(expected));

  it.each([
    ['../../etc/passwd', 'passwd'],
    ['C:\\Users\\x\\report.pdf', 'report.pdf'],
    ['.hidden', 'hidden'],
    ['a\u0000b.txt', 'a_b.txt'],
    [undefined, 'attachment-1'],
    ['..', 'attachment-1'],
  ])('sanitizes %j to %j', (name, expected) => expect(sanitizeFilename(name, 'attachment-1')).toBe(expected));

  it('withholds log properties that could carry content or credentials', () => {
    const line = formatLine('x', {
      taskId: 't1',
      subject: 'private',
      body: 'private',
      accessToken: 'eyJ...',
      clientSecret: 's',
    });
    expect(line).toBe(
      'x {"taskId":"t1","subject":"[withheld]","body":"[withheld]","accessToken":"[withheld]","clientSecret":"[withheld]"}',
    );
  });
});

describe('host.json', () => {
  const host = JSON.parse(readFileSync('host.json', 'utf8'));
  it('is a v2 host with the v4 extension bundle and base64 queue messages', () => {
    expect(host.version).toBe('2.0');
    expect(host.extensionBundle).toEqual({ id: 'Microsoft.Azure.Functions.ExtensionBundle', version: '[4.*, 5.0.0)' });
    expect(readHostJson('.', {}).queues.messageEncoding).toBe('base64');
  });

  it('the reply handler states the same maxDequeueCount as the host applies', async () => {
    const logs: string[] = [];
    const { maxDequeueCount } = readHostJson('.', {}).queues;
    const { InvocationContext } = await import('@azure/functions');
    const ctx = new InvocationContext({
      functionName: 'reply',
      invocationId: '1',
      triggerMetadata: { dequeueCount: maxDequeueCount },
      logHandler: (_l, ...a) => logs.push(a.join(' ')),
    });
    await expect(
      createHandlers(() => {
        throw new Error('no runtime');
      }).reply({}, ctx),
    ).rejects.toThrow();
    expect(logs.join('\n')).toContain(`delivery ${maxDequeueCount} of ${maxDequeueCount}`);
    expect(logs.join('\n')).toContain('this was the last delivery');
  });
});

describe('published JSON Schemas', () => {
  it('match the zod schemas (run `npm run schemas` after changing the contract)', () => {
    for (const [name, schema] of Object.entries(contractJsonSchemas())) {
      expect(JSON.parse(readFileSync(`schemas/${name}`, 'utf8')), name).toEqual(schema);
    }
  });
});
