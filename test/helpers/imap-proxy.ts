/**
 * A test file's local stack with the IMAP fault proxy in front of Dovecot, and the warm sessions
 * its tests create: started before the file's tests, all stopped after them.
 */
import { afterAll, beforeAll } from 'vitest';

import { LocalStack } from '../../localstack';
import { ImapFaultProxy } from '../../localstack/proxies';
import { WarmSession } from '../../shared/mailbox/warm';

export interface ProxiedStack {
  readonly stack: LocalStack;
  readonly proxy: ImapFaultProxy;
  /** A warm session closed with the file's stack. */
  warmSession(keepWarmMs: number, now?: () => number): WarmSession;
  /** Closes every warm session made so far (their idle connections with them). */
  closeWarmSessions(): Promise<void>;
}

/** Registers the file's beforeAll and afterAll; the fields are set once beforeAll has run. */
export function useProxiedStack(): ProxiedStack {
  let stack: LocalStack | undefined;
  let proxy: ImapFaultProxy | undefined;
  const warm: WarmSession[] = [];
  beforeAll(async () => {
    stack = await LocalStack.start();
    proxy = new ImapFaultProxy(stack.dovecot.imapPort, stack.certs);
    await proxy.start();
  });
  afterAll(async () => {
    await Promise.all(warm.map((w) => w.close()));
    await proxy?.stop();
    await stack?.stop();
  });
  return {
    get stack() {
      if (!stack) throw new Error('the local stack is not started yet (use it inside a test)');
      return stack;
    },
    get proxy() {
      if (!proxy) throw new Error('the IMAP proxy is not started yet (use it inside a test)');
      return proxy;
    },
    warmSession(keepWarmMs, now) {
      const session = new WarmSession(keepWarmMs, now);
      warm.push(session);
      return session;
    },
    async closeWarmSessions() {
      await Promise.all(warm.map((w) => w.close()));
    },
  };
}
