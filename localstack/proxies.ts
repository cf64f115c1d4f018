/**
 * Fault injection between inboxq and the local servers, on loopback.
 *
 * TcpProxy: forwards bytes, counting what the clients send; `down()` refuses and cuts connections
 * (Storage unavailable).
 * ImapFaultProxy: terminates TLS with the stack's certificate, forwards to Dovecot over TLS, and
 * reads the client's command lines so it can answer one the way Exchange does when it throttles
 * (`tag BAD Request is throttled. Suggested Backoff Time: N milliseconds`) or cut the connection
 * when a command comes. It can also show a folder under another name, without its SPECIAL-USE flag
 * (a mailbox in another language on a server that does not advertise SPECIAL-USE).
 */
import net from 'node:net';
import tls from 'node:tls';

import type { Certificates } from './certs';

/** Tracks both ends of a proxied connection; an error on either closes both. */
function pair(client: net.Socket, upstream: net.Socket, sockets: Set<net.Socket>): void {
  for (const s of [client, upstream]) {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {
      client.destroy();
      upstream.destroy();
    });
  }
}

export class TcpProxy {
  port = 0;
  /** Bytes the clients sent through the proxy so far (requests, for an HTTP service). */
  bytesFromClients = 0;
  private server: net.Server | undefined;
  private readonly sockets = new Set<net.Socket>();
  private isDown = false;

  constructor(private readonly targetPort: number) {}

  async start(): Promise<void> {
    this.server = net.createServer((client) => {
      if (this.isDown) return client.destroy();
      const upstream = net.connect(this.targetPort, '127.0.0.1');
      pair(client, upstream, this.sockets);
      client.on('data', (chunk: Buffer) => (this.bytesFromClients += chunk.length));
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as net.AddressInfo).port;
  }

  down(): void {
    this.isDown = true;
    for (const s of this.sockets) s.destroy();
  }

  up(): void {
    this.isDown = false;
  }

  async stop(): Promise<void> {
    this.down();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}

interface Rule {
  pattern: RegExp;
  action:
    { kind: 'throttle'; backoffMs: number } | { kind: 'drop' } | { kind: 'answer'; text: string } | { kind: 'swallow' };
  times: number;
}

export class ImapFaultProxy {
  port = 0;
  /** Commands answered with a throttling response, and connections cut, so far. */
  readonly injected: string[] = [];
  /** Client connections accepted so far. */
  connections = 0;
  /** Every command the client sent, in order: its name and the items it asks for (`UID FETCH (UID BODY.PEEK[])`), never its arguments. */
  readonly commands: string[] = [];
  /** Folders shown under another name (server name -> shown name), their SPECIAL-USE flags removed. */
  private readonly renames = new Map<string, string>();
  private server: tls.Server | undefined;
  private readonly rules: Rule[] = [];
  private readonly sockets = new Set<net.Socket>();
  private readonly clients = new Set<net.Socket>();

  constructor(
    private readonly targetPort: number,
    private readonly certs: Certificates,
  ) {}

  /** The next `times` commands matching `pattern` are answered with Exchange's throttling response. */
  throttle(pattern: RegExp, backoffMs: number, times = 1): void {
    this.rules.push({ pattern, action: { kind: 'throttle', backoffMs }, times });
  }

  /**
   * The next `times` commands matching `pattern` get `text` as their tagged answer instead of
   * reaching the server, e.g. Exchange's `BAD User is authenticated but not connected.`
   */
  answer(pattern: RegExp, text: string, times = 1): void {
    this.rules.push({ pattern, action: { kind: 'answer', text }, times });
  }

  /**
   * Shows the server's folder `folder` as `shown` (LIST and STATUS answers), without a SPECIAL-USE
   * flag, and maps `shown` back in the client's commands.
   */
  renameFolder(folder: string, shown: string): void {
    this.renames.set(folder, shown);
  }

  /** A server line as the client sees it, with the renamed folders. */
  private serverLine(line: string): string {
    if (!/^\* (LIST|LSUB|STATUS) /.test(line)) return line;
    let out = line;
    for (const [folder, shown] of this.renames) {
      const quoted = new RegExp(`(?:"${folder}"|(?<=[ )])${folder})(?=\\r?\\n| \\()`);
      if (!quoted.test(out)) continue;
      out = out.replace(quoted, `"${shown}"`).replace(/\\(Sent|Drafts|Trash|Junk|Archive|All|Flagged) ?/g, '');
    }
    return out;
  }

  /** A client line as the server must see it. */
  private clientLine(line: string): string {
    let out = line;
    for (const [folder, shown] of this.renames) out = out.split(`"${shown}"`).join(`"${folder}"`);
    return out;
  }

  /** The next `times` commands matching `pattern` go unanswered (a server that stopped responding). */
  swallow(pattern: RegExp, times = 1): void {
    this.rules.push({ pattern, action: { kind: 'swallow' }, times });
  }

  /** Cuts every connection open now, as a server restart or an idle timeout on its side would. */
  disconnectAll(): void {
    for (const s of this.sockets) s.destroy();
  }

  /** Client connections open now. */
  get open(): number {
    return this.clients.size;
  }

  /** The next command matching `pattern` cuts the connection instead of reaching the server. */
  dropOn(pattern: RegExp, times = 1): void {
    this.rules.push({ pattern, action: { kind: 'drop' }, times });
  }

  async start(): Promise<void> {
    this.server = tls.createServer({ key: this.certs.key, cert: this.certs.cert }, (client) => {
      this.connections++;
      this.clients.add(client);
      client.on('close', () => this.clients.delete(client));
      const upstream = tls.connect({
        host: '127.0.0.1',
        port: this.targetPort,
        ca: this.certs.ca,
        servername: 'localhost',
      });
      pair(client, upstream, this.sockets);
      let fromServer = Buffer.alloc(0);
      upstream.on('data', (chunk: Buffer) => {
        if (this.renames.size === 0) return client.write(chunk);
        fromServer = Buffer.concat([fromServer, chunk]);
        let end = fromServer.lastIndexOf('\r\n');
        if (end < 0) return;
        end += 2;
        const lines = fromServer
          .subarray(0, end)
          .toString('latin1')
          .split(/(?<=\r\n)/);
        fromServer = fromServer.subarray(end);
        client.write(Buffer.from(lines.map((l) => this.serverLine(l)).join(''), 'latin1'));
      });
      let pending = Buffer.alloc(0);
      client.on('data', (chunk: Buffer) => {
        pending = Buffer.concat([pending, chunk]);
        for (let end = pending.indexOf('\r\n'); end >= 0; end = pending.indexOf('\r\n')) {
          const line = pending.subarray(0, end + 2);
          pending = pending.subarray(end + 2);
          const text = line.toString('latin1');
          const name = /^[A-Za-z0-9.]+ ((?:UID )?[A-Z]+)\b/.exec(text)?.[1];
          const items = / (\([^()]*\))\r\n$/.exec(text)?.[1];
          if (name) this.commands.push(items ? `${name} ${items}` : name);
          const rule = this.rules.find((r) => r.times > 0 && r.pattern.test(text));
          if (!rule) {
            upstream.write(this.renames.size ? Buffer.from(this.clientLine(text), 'latin1') : line);
            continue;
          }
          rule.times--;
          const tag = text.split(' ')[0];
          const command = text.trim().split(' ').slice(1, 4).join(' ');
          this.injected.push(`${rule.action.kind} ${command}`);
          if (rule.action.kind === 'drop') {
            client.destroy();
            upstream.destroy();
            return;
          }
          if (rule.action.kind === 'swallow') continue;
          client.write(
            rule.action.kind === 'answer'
              ? `${tag} ${rule.action.text}\r\n`
              : `${tag} BAD Request is throttled. Suggested Backoff Time: ${rule.action.backoffMs} milliseconds\r\n`,
          );
        }
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as net.AddressInfo).port;
  }

  async stop(): Promise<void> {
    this.disconnectAll();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}
