/**
 * The delay proxy the round-trip benchmark stands on (localstack/delay-proxy.ts), in its own process
 * as the benchmark runs it (the compiled module, which forks itself): bytes pass through in order,
 * an exchange takes the round trip it was given, the round trips a client starts are counted the
 * way the benchmark reports them, and a proxy whose process died is an error, not a wait for ever.
 */
import type { ChildProcess } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { DelayProxyProcess as Proxy } from '../../localstack/delay-proxy';

let DelayProxyProcess: typeof Proxy;

/** What the echo server answers: each byte plus one (so an answer is not the bytes it was sent). */
const shifted = (text: string) => [...text].map((ch) => String.fromCharCode((ch.charCodeAt(0) + 1) & 0xff)).join('');

/** An echo server on loopback that answers each chunk with its bytes shifted. */
let echo: net.Server;
let echoPort = 0;
beforeAll(async () => {
  ({ DelayProxyProcess } = (await import(path.resolve('build/localstack/delay-proxy.js'))) as {
    DelayProxyProcess: typeof Proxy;
  });
  echo = net.createServer((s) => s.on('data', (c: Buffer) => s.write(Buffer.from(c.map((b) => (b + 1) & 0xff)))));
  await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve));
  echoPort = (echo.address() as net.AddressInfo).port;
});
afterAll(async () => {
  await new Promise<void>((resolve) => echo.close(() => resolve()));
});

/**
 * Connects through the proxy; `ask` writes its parts one after another, without waiting, and
 * resolves with the answer once it is whole.
 */
async function connect(port: number): Promise<{ ask: (...parts: string[]) => Promise<string>; close: () => void }> {
  const socket = net.connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  socket.setNoDelay(true);
  let buffered = '';
  let waiting: { length: number; resolve: (s: string) => void } | undefined;
  socket.on('data', (c: Buffer) => {
    buffered += c.toString('latin1');
    if (waiting && buffered.length >= waiting.length) {
      const answer = buffered.slice(0, waiting.length);
      buffered = buffered.slice(waiting.length);
      const { resolve } = waiting;
      waiting = undefined;
      resolve(answer);
    }
  });
  return {
    ask: (...parts) =>
      new Promise((resolve) => {
        waiting = { length: parts.join('').length, resolve };
        for (const part of parts) socket.write(part, 'latin1');
      }),
    close: () => socket.destroy(),
  };
}

describe('the delay proxy', () => {
  it('passes bytes through in order, adds its round trip to each exchange, and counts the exchanges', async () => {
    const proxy = new DelayProxyProcess(echoPort, 0);
    await proxy.start();
    try {
      const client = await connect(proxy.port);
      // Every byte value, through and back, in order.
      const all = Array.from({ length: 256 }, (_, i) => String.fromCharCode(i)).join('');
      expect(await client.ask(all)).toBe(shifted(all));

      await proxy.setRoundTrip(60);
      await proxy.counts(true);
      for (let i = 0; i < 3; i++) {
        const started = performance.now();
        expect(await client.ask(`ping ${i}\n`)).toBe(shifted(`ping ${i}\n`));
        // The delay is the proxy's function: an exchange never comes back sooner than its round trip.
        expect(performance.now() - started).toBeGreaterThanOrEqual(58);
      }
      // Three exchanges, each started after the server last spoke: three round trips, one connection.
      expect(await proxy.counts()).toEqual({ roundTrips: 3, connections: 0 });

      // Chunks written back to back before any answer (a pipelined burst) are one round trip.
      await proxy.counts(true);
      expect(await client.ask('a\n', 'b\n', 'c\n')).toBe(shifted('a\nb\nc\n'));
      expect((await proxy.counts()).roundTrips).toBe(1);
      client.close();

      const second = await connect(proxy.port);
      expect(await second.ask('x')).toBe('y');
      expect(await proxy.counts(true)).toEqual({ roundTrips: 2, connections: 1 });
      second.close();
    } finally {
      await proxy.stop();
    }
  });

  it('reports a proxy process that died instead of waiting on it', async () => {
    const proxy = new DelayProxyProcess(echoPort, 0);
    await proxy.start();
    const child = (proxy as unknown as { child: ChildProcess }).child;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
    await expect(proxy.counts()).rejects.toThrow(`the delay proxy in front of port ${echoPort} is not running`);
    // Stopping a dead proxy returns at once.
    await proxy.stop();
  });
});
