/**
 * A TCP proxy on loopback that delays every chunk, each way, by half a round trip: what a peer tens
 * of milliseconds away costs, for the round-trip benchmark (scripts/bench-rtt.ts). Bytes pass
 * through untouched (TLS included), in order; there is no bandwidth limit.
 *
 * It also counts the round trips clients start: a chunk from the client after the server last
 * spoke on that connection (or the first) starts one. Commands pipelined in one burst count once;
 * requests in flight on several connections at once count once each.
 */
import net from 'node:net';

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
