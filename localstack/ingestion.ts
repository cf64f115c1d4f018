/**
 * An Application Insights ingestion endpoint on loopback, over HTTPS with the stack's certificate:
 * what the Azure Monitor exporter posts to (`/v2.1/track`, gzip or plain JSON envelopes) is kept,
 * and each post is accepted. Entra ID authentication is not checked (the component's local auth is
 * off in Azure; no token endpoint for it runs here).
 */
import type { IncomingMessage } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { gunzipSync } from 'node:zlib';

import type { Certificates } from './certs';

export interface Envelope {
  name: string;
  iKey: string;
  time?: string;
  tags: Record<string, string>;
  data: {
    baseType: string;
    baseData: { metrics: { name: string; value: number; count?: number }[]; properties?: Record<string, string> };
  };
}

export const INSTRUMENTATION_KEY = '0d4b2a8c-3f1e-4c6b-9a7d-5e2f1b3c4d5e';

function body(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

export class IngestionEndpoint {
  /** Every envelope received, with when it arrived (epoch ms). */
  readonly received: { at: number; envelope: Envelope }[] = [];
  /** The paths posted to. */
  readonly paths: string[] = [];
  private server: Server | undefined;

  async start(certs: Certificates): Promise<void> {
    this.server = createServer({ key: certs.key, cert: certs.cert }, (req, res) => {
      void body(req).then((raw) => {
        this.paths.push(req.url ?? '');
        const text = (req.headers['content-encoding'] === 'gzip' ? gunzipSync(raw) : raw).toString('utf8');
        const items = JSON.parse(text) as Envelope | Envelope[];
        const list = Array.isArray(items) ? items : [items];
        const at = Date.now();
        for (const envelope of list) this.received.push({ at, envelope });
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ itemsReceived: list.length, itemsAccepted: list.length, errors: [] }));
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
  }

  get port(): number {
    return (this.server!.address() as AddressInfo).port;
  }

  /** The connection string an app sets as APPLICATIONINSIGHTS_CONNECTION_STRING to send here. */
  get connectionString(): string {
    return `InstrumentationKey=${INSTRUMENTATION_KEY};IngestionEndpoint=https://127.0.0.1:${this.port}/`;
  }

  async stop(): Promise<void> {
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}
