/**
 * A TCP proxy on loopback that delays every chunk, each way, by half a round trip: what a peer tens
 * of milliseconds away costs, for the round-trip benchmark (scripts/bench-rtt.ts). Bytes pass
 * through untouched (TLS included), in order; there is no bandwidth limit.
 *
 * It runs in a process of its own (`DelayProxy.spawn`): the network's delay must not wait on the
 * measured process's event loop. In the same process, a proxy's timers fire only when the client's
 * synchronous work is over, so its CPU time and the round trips add up where, over a real network,
 * they overlap; the side doing more CPU work would pay the round trips twice.
 *
 * It also counts the round trips clients start: a chunk from the client after the server last
 * spoke on that connection (or the first) starts one. Commands pipelined in one burst count once;
 * requests in flight on several connections at once count once each.
 */
import { type ChildProcess, fork } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';

interface Pending {
  chunk: Buffer;
  due: number;
}

/** Writes what arrives to `to`, each chunk `delayMs` after it arrived, in order. */
class DelayedPipe {
  private readonly pending: Pending[] = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly to: net.Socket,
    private readonly delayMs: () => number,
  ) {}

  push(chunk: Buffer): void {
    this.pending.push({ chunk, due: performance.now() + this.delayMs() });
    if (!this.timer) this.schedule();
  }

  private schedule(): void {
    const next = this.pending[0];
    if (!next) {
      this.timer = undefined;
      return;
    }
    this.timer = setTimeout(() => this.flush(), Math.max(0, next.due - performance.now()));
  }

  private flush(): void {
    const now = performance.now();
    while (this.pending.length > 0 && this.pending[0]!.due <= now + 0.5) {
      const { chunk } = this.pending.shift()!;
      if (!this.to.destroyed) this.to.write(chunk);
    }
    this.schedule();
  }

  /** Ends `to` once what is pending is written. */
  end(): void {
    const wait = this.pending.length > 0 ? Math.max(0, this.pending.at(-1)!.due - performance.now()) + 1 : 0;
    setTimeout(() => this.to.end(), wait);
  }

  clear(): void {
    if (this.timer) clearTimeout(this.timer);
    this.pending.length = 0;
  }
}

export class DelayProxy {
  port = 0;
  /** Round trips clients started (see above), since the last `resetCounts`. */
  roundTrips = 0;
  /** Connections opened since the last `resetCounts`. */
  connections = 0;
  private server: net.Server | undefined;
  private readonly sockets = new Set<net.Socket>();

  /** `roundTripMs`: the round trip the proxy adds (half of it each way). */
  constructor(
    private readonly targetPort: number,
    private roundTripMs: number,
  ) {}

  setRoundTrip(ms: number): void {
    this.roundTripMs = ms;
  }

  resetCounts(): void {
    this.roundTrips = 0;
    this.connections = 0;
  }

  async start(): Promise<void> {
    const oneWay = () => this.roundTripMs / 2;
    this.server = net.createServer((client) => {
      this.connections++;
      const upstream = net.connect(this.targetPort, '127.0.0.1');
      for (const s of [client, upstream]) {
        s.setNoDelay(true);
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
      }
      const toServer = new DelayedPipe(upstream, oneWay);
      const toClient = new DelayedPipe(client, oneWay);
      let lastFromClient = false;
      client.on('data', (chunk: Buffer) => {
        if (!lastFromClient) this.roundTrips++;
        lastFromClient = true;
        toServer.push(chunk);
      });
      upstream.on('data', (chunk: Buffer) => {
        lastFromClient = false;
        toClient.push(chunk);
      });
      client.on('end', () => toServer.end());
      upstream.on('end', () => toClient.end());
      const close = () => {
        toServer.clear();
        toClient.clear();
        client.destroy();
        upstream.destroy();
      };
      client.on('error', close);
      upstream.on('error', close);
      client.on('close', () => setTimeout(() => upstream.destroy(), oneWay() + 1));
      upstream.on('close', () => setTimeout(() => client.destroy(), oneWay() + 1));
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as net.AddressInfo).port;
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}

/** What the parent asks the proxy's process, and what it answers. */
type Ask =
  | { op: 'start'; targetPort: number; roundTripMs: number }
  | { op: 'set'; roundTripMs: number }
  | { op: 'counts'; reset: boolean }
  | { op: 'stop' };
type Request = Ask & { id: number };
interface Answer {
  id: number;
  port?: number;
  roundTrips?: number;
  connections?: number;
}

/** Whether a child process has exited (by itself or by a signal). */
const hasExited = (child: ChildProcess) => child.exitCode !== null || child.signalCode !== null;

/** A DelayProxy in a child process (this file, compiled), driven over IPC. */
export class DelayProxyProcess {
  port = 0;
  private child: ChildProcess | undefined;
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve: (a: Answer) => void; reject: (e: Error) => void }>();

  constructor(
    private readonly targetPort: number,
    private readonly roundTripMs: number,
  ) {}

  async start(): Promise<void> {
    this.child = fork(path.join(__dirname, 'delay-proxy.js'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.child.on('message', (a: Answer) => {
      this.waiting.get(a.id)?.resolve(a);
      this.waiting.delete(a.id);
    });
    // A proxy that died answers nothing more: whoever waits on it is told, not left waiting.
    this.child.once('exit', (code, signal) => {
      const error = new Error(
        `the delay proxy in front of port ${this.targetPort} exited (${signal ?? `code ${code}`}); its output above says why`,
      );
      for (const { reject } of this.waiting.values()) reject(error);
      this.waiting.clear();
    });
    const a = await this.ask({ op: 'start', targetPort: this.targetPort, roundTripMs: this.roundTripMs });
    this.port = a.port!;
  }

  async setRoundTrip(ms: number): Promise<void> {
    await this.ask({ op: 'set', roundTripMs: ms });
  }

  /** Round trips started and connections opened since the last reset (`reset`: start counting again). */
  async counts(reset = false): Promise<{ roundTrips: number; connections: number }> {
    const a = await this.ask({ op: 'counts', reset });
    return { roundTrips: a.roundTrips!, connections: a.connections! };
  }

  async stop(): Promise<void> {
    const child = this.child;
    if (!child) return;
    const exited = hasExited(child) ? Promise.resolve() : new Promise((resolve) => child.once('exit', resolve));
    await this.ask({ op: 'stop' }).catch(() => undefined);
    await exited;
    this.child = undefined;
  }

  private ask(request: Ask): Promise<Answer> {
    const id = this.nextId++;
    const child = this.child;
    if (!child || hasExited(child))
      return Promise.reject(new Error(`the delay proxy in front of port ${this.targetPort} is not running`));
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      child.send({ ...request, id }, (err) => err && reject(err));
    });
  }
}

/** The child's side: one proxy, as the parent says. */
function serve(): void {
  let proxy: DelayProxy | undefined;
  process.on('message', (r: Request) => {
    const answer = (a: Omit<Answer, 'id'> = {}) => process.send!({ ...a, id: r.id });
    void (async () => {
      if (r.op === 'start') {
        proxy = new DelayProxy(r.targetPort, r.roundTripMs);
        await proxy.start();
        answer({ port: proxy.port });
      } else if (r.op === 'set') {
        proxy!.setRoundTrip(r.roundTripMs);
        answer();
      } else if (r.op === 'counts') {
        answer({ roundTrips: proxy!.roundTrips, connections: proxy!.connections });
        if (r.reset) proxy!.resetCounts();
      } else {
        await proxy?.stop();
        process.send!({ id: r.id }, () => process.exit(0));
      }
    })();
  });
}

if (require.main === module) serve();
