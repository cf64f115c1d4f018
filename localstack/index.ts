/**
 * The embedded local stack: every peer inboxq talks to in production, running for real on
 * 127.0.0.1, started in a few seconds and stopped afterwards. Used by the test suite and the demo.
 *
 *   identity provider (Entra-shaped, HTTPS)  <- MSAL (client credentials), @azure/identity
 *   Key Vault secrets endpoint (HTTPS)       <- SecretClient (the client secret lives here)
 *   Dovecot IMAP (implicit TLS, XOAUTH2)     <- imapflow (drain), tests reading mailboxes
 *   SMTP submission (STARTTLS, XOAUTH2)      <- nodemailer (replies); delivers into Dovecot over LMTP
 *   Azurite (queues, tables, blobs)          <- the Storage SDKs
 */
import { randomBytes, randomUUID } from 'node:crypto';
import {
  chmodSync,
  chownSync as fsChown,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { ImapFlow } from 'imapflow';
import SMTPConnection from 'nodemailer/lib/smtp-connection';
import XOAuth2 from 'nodemailer/lib/xoauth2';

import { LocalAzurite } from './azurite';
import { type Certificates, makeCertificates, openssl } from './certs';
import { LocalDovecot } from './dovecot';
import { EXCHANGE_AUDIENCE, IdentityProvider } from './idp';
import { LocalKeyVault } from './keyvault';
import { LocalSmtpServer } from './smtp';

export { EXCHANGE_AUDIENCE, IdentityProvider } from './idp';

export const CLIENT_SECRET_NAME = 'inboxq-client-secret';
export const EXCHANGE_ROLES = ['IMAP.AccessAsApp', 'SMTP.SendAsApp'];

export interface StoredMail {
  uid: number;
  source: Buffer;
  flags: Set<string>;
}

export interface LocalStackOptions {
  /** Where the stack keeps its files; a new temporary folder by default, removed on stop. */
  dir?: string;
  /** Export AZURE_TENANT_ID/AZURE_CLIENT_ID/AZURE_CLIENT_SECRET/AZURE_AUTHORITY_HOST for a vault-reader identity (as `az login` would provide). Default true. */
  exportDeveloperIdentity?: boolean;
}

export class LocalStack {
  readonly dir: string;
  readonly certs: Certificates;
  readonly idp = new IdentityProvider();
  readonly vault: LocalKeyVault;
  readonly dovecot: LocalDovecot;
  readonly azurite: LocalAzurite;
  smtp!: LocalSmtpServer;
  /** The inboxq app registration: client id, and its secret (stored only in the vault and here). */
  readonly clientId = randomUUID();
  readonly clientSecret = `local~${randomBytes(24).toString('base64url')}`;
  /** The Function App's managed identity, as App Service's MSI endpoint serves it. */
  readonly managedIdentity = { clientId: randomUUID(), principalId: randomUUID() };
  /** A developer identity allowed to read the vault. */
  readonly developerClientId = randomUUID();
  private readonly developerSecret = randomBytes(24).toString('base64url');
  private readonly ownsDir: boolean;

  private constructor(options: LocalStackOptions) {
    this.ownsDir = !options.dir;
    this.dir = options.dir ?? mkdtempSync(path.join(os.tmpdir(), 'inboxq-stack-'));
    mkdirSync(this.dir, { recursive: true });
    // Dovecot's unprivileged users must reach their keys and mail homes below this folder.
    chmodSync(this.dir, 0o755);
    this.certs = makeCertificates(this.dir);
    this.vault = new LocalKeyVault(this.idp);
    this.dovecot = new LocalDovecot(path.join(this.dir, 'dovecot'));
    this.azurite = new LocalAzurite(path.join(this.dir, 'azurite'));
  }

  static async start(options: LocalStackOptions = {}): Promise<LocalStack> {
    const stack = new LocalStack(options);
    try {
      await stack.idp.start(stack.certs);
      stack.idp.registerApp({ clientId: stack.clientId, secret: stack.clientSecret, roles: EXCHANGE_ROLES });
      stack.idp.registerApp({ clientId: stack.developerClientId, secret: stack.developerSecret, roles: [] });
      stack.idp.registerManagedIdentity(stack.managedIdentity);
      await stack.vault.start(stack.certs);
      stack.vault.setSecret(CLIENT_SECRET_NAME, stack.clientSecret);
      await Promise.all([stack.dovecot.start(stack.certs, stack.idp), stack.azurite.start()]);
      stack.smtp = new LocalSmtpServer(stack.idp, { lmtpPort: stack.dovecot.lmtpPort });
      await stack.smtp.start(stack.certs);
      if (options.exportDeveloperIdentity !== false) stack.exportDeveloperIdentity();
    } catch (err) {
      await stack.stop();
      throw err;
    }
    return stack;
  }

  /** What `az login` gives a developer: DefaultAzureCredential finds these and reads the vault with them. */
  exportDeveloperIdentity(): void {
    Object.assign(process.env, this.sdkSettings());
  }

  /**
   * The Azure SDK's own settings for this stack: the developer identity DefaultAzureCredential reads
   * the vault with, and the managed-identity endpoint App Service would provide.
   */
  sdkSettings(): Record<string, string> {
    return {
      AZURE_TENANT_ID: this.idp.tenantId,
      AZURE_CLIENT_ID: this.developerClientId,
      AZURE_CLIENT_SECRET: this.developerSecret,
      AZURE_AUTHORITY_HOST: this.idp.url,
      // What App Service sets for a managed identity; ManagedIdentityCredential reads these.
      IDENTITY_ENDPOINT: this.idp.msiEndpoint,
      IDENTITY_HEADER: this.idp.msiHeader,
    };
  }

  /**
   * Registers another app (its own client id and secret, the secret in the vault under its own
   * name) and returns the settings that point at it: a test gets a token provider of its own.
   */
  registerApp(roles: string[] = EXCHANGE_ROLES): {
    clientId: string;
    secretName: string;
    settings: Record<string, string>;
  } {
    const clientId = randomUUID();
    const secretName = `app-${clientId.slice(0, 8)}-secret`;
    const secret = `local~${randomBytes(24).toString('base64url')}`;
    this.idp.registerApp({ clientId, secret, roles });
    this.vault.setSecret(secretName, secret);
    return { clientId, secretName, settings: { INBOXQ_CLIENT_ID: clientId, INBOXQ_CLIENT_SECRET_NAME: secretName } };
  }

  /**
   * An app that signs in with a certificate: a new key and self-signed certificate, the PEM bundle
   * in the vault as Key Vault serves a PEM certificate's secret, the public part registered.
   */
  registerCertificateApp(): { clientId: string; certificateName: string; settings: Record<string, string> } {
    const clientId = randomUUID();
    const certificateName = `cert-${clientId.slice(0, 8)}`;
    const dir = mkdtempSync(path.join(this.dir, 'cert-'));
    openssl(
      [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-keyout',
        'key.pem',
        '-out',
        'cert.pem',
        '-days',
        '2',
        '-subj',
        `/CN=inboxq-${certificateName}`,
      ],
      dir,
    );
    const cert = readFileSync(path.join(dir, 'cert.pem'), 'utf8');
    const key = readFileSync(path.join(dir, 'key.pem'), 'utf8');
    rmSync(dir, { recursive: true, force: true });
    this.idp.registerApp({ clientId, certificates: [cert], roles: EXCHANGE_ROLES });
    this.vault.setSecret(certificateName, `${key}${cert}`);
    return {
      clientId,
      certificateName,
      settings: {
        INBOXQ_CLIENT_ID: clientId,
        INBOXQ_CLIENT_CREDENTIAL: 'certificate',
        INBOXQ_CLIENT_CERTIFICATE_NAME: certificateName,
      },
    };
  }

  /** An app with no secret at all: the stack's managed identity is a federated credential on it (or not, to test the refusal). */
  registerFederatedApp(options: { federated?: boolean } = {}): { clientId: string; settings: Record<string, string> } {
    const clientId = randomUUID();
    const federated =
      options.federated === false
        ? []
        : [
            {
              issuer: this.idp.federationIssuer,
              subject: this.managedIdentity.principalId,
              audiences: ['api://AzureADTokenExchange'],
            },
          ];
    this.idp.registerApp({ clientId, federated, roles: EXCHANGE_ROLES });
    return {
      clientId,
      settings: {
        INBOXQ_CLIENT_ID: clientId,
        INBOXQ_CLIENT_CREDENTIAL: 'managed-identity',
        INBOXQ_MANAGED_IDENTITY_CLIENT_ID: this.managedIdentity.clientId,
      },
    };
  }

  /** Rotates an app's secret as an admin would: a new secret in Entra ID (the old one stops working) and a new version in the vault. */
  rotateSecret(clientId: string, secretName: string): void {
    const app = this.idp.app(clientId);
    if (!app) throw new Error(`no app ${clientId}`);
    const secret = `local~${randomBytes(24).toString('base64url')}`;
    this.idp.registerApp({ ...app, secret });
    this.vault.setSecret(secretName, secret);
  }

  /** Every inboxq setting for `mailbox` on this stack. The client secret is read from the vault. */
  settings(mailbox: string, overrides: Record<string, string | undefined> = {}): Record<string, string | undefined> {
    return {
      INBOXQ_MAILBOX: mailbox,
      INBOXQ_TENANT_ID: this.idp.tenantId,
      INBOXQ_CLIENT_ID: this.clientId,
      INBOXQ_KEYVAULT_URL: this.vault.url,
      INBOXQ_CLIENT_SECRET_NAME: CLIENT_SECRET_NAME,
      INBOXQ_KEYVAULT_VERIFY_CHALLENGE_RESOURCE: 'false',
      INBOXQ_KEYVAULT_INSTANCE_DISCOVERY: 'false',
      INBOXQ_AUTHORITY_HOST: this.idp.url,
      INBOXQ_IMAP_HOST: '127.0.0.1',
      INBOXQ_IMAP_PORT: String(this.dovecot.imapPort),
      INBOXQ_IMAP_SECURE: 'true',
      INBOXQ_SMTP_HOST: '127.0.0.1',
      INBOXQ_SMTP_PORT: String(this.smtp.port),
      INBOXQ_TLS_CA_FILE: this.certs.caFile,
      INBOXQ_AUTHORIZED_SENDERS: '',
      INBOXQ_TRUSTED_AUTHSERV_ID: '',
      INBOXQ_MICROSOFT_INTERNAL_FALLBACK: 'true',
      INBOXQ_DRAIN_SCHEDULE: '0 */1 * * * *',
      AzureWebJobsStorage: this.azurite.connectionString,
      ...overrides,
    };
  }

  /** An app-only Exchange token with both roles, minted by the identity provider (test-side access to any mailbox). */
  private exchangeToken(): Promise<string> {
    return this.idp.mint({ roles: EXCHANGE_ROLES, appid: 'inboxq-local-stack' }, { audience: EXCHANGE_AUDIENCE });
  }

  /**
   * An IMAP session on any mailbox, with a token minted by the identity provider (test-side access),
   * or the caller's; on Dovecot's port, or another that leads to it (a delay proxy's).
   */
  async imap(mailbox: string, options: { accessToken?: string; port?: number } = {}): Promise<ImapFlow> {
    const accessToken = options.accessToken ?? (await this.exchangeToken());
    const client = new ImapFlow({
      host: '127.0.0.1',
      port: options.port ?? this.dovecot.imapPort,
      secure: true,
      tls: { ca: this.certs.ca },
      auth: { user: mailbox, accessToken },
      logger: false,
    });
    client.on('error', () => {});
    await client.connect();
    return client;
  }

  /** An SMTP connection authenticated as `mailbox` and left open (another client using one of its connections). */
  async smtpConnection(mailbox: string): Promise<{ close(): Promise<void> }> {
    const accessToken = await this.exchangeToken();
    const connection = new SMTPConnection({
      host: '127.0.0.1',
      port: this.smtp.port,
      requireTLS: true,
      tls: { ca: this.certs.ca },
    });
    connection.on('error', () => {});
    await new Promise<void>((resolve, reject) => connection.connect((err) => (err ? reject(err) : resolve())));
    await new Promise<void>((resolve, reject) =>
      connection.login({ oauth2: new XOAuth2({ user: mailbox, accessToken }) }, (err) =>
        err ? reject(err) : resolve(),
      ),
    );
    return {
      close: () =>
        new Promise<void>((resolve) => {
          connection.once('end', () => resolve());
          connection.quit();
        }),
    };
  }

  /** Puts a mail into a folder of a mailbox, as delivery would. */
  async appendMail(mailbox: string, raw: string | Buffer, folder = 'INBOX'): Promise<void> {
    const client = await this.imap(mailbox);
    try {
      await client.append(folder, typeof raw === 'string' ? Buffer.from(raw.replace(/\r?\n/g, '\r\n')) : raw);
    } catch (err) {
      throw imapFailure(`APPEND to ${mailbox}/${folder}`, err);
    } finally {
      await client.logout();
    }
  }

  /**
   * Puts raw bytes straight into a mailbox's Maildir, as a broken delivery would: for input IMAP
   * APPEND refuses (0 bytes, NUL bytes).
   */
  async dropIntoMaildir(mailbox: string, raw: Buffer | Buffer[]): Promise<void> {
    // Selecting INBOX makes Dovecot create the Maildir (cur, new, tmp), owned by its mail user.
    const client = await this.imap(mailbox);
    await client.mailboxOpen('INBOX');
    await client.logout();
    const dir = path.join(this.dir, 'dovecot', 'home', mailbox.toLowerCase(), 'Maildir');
    for (const bytes of Array.isArray(raw) ? raw : [raw]) {
      const name = `${Date.now()}.${randomBytes(6).toString('hex')}.localstack`;
      writeFileSync(path.join(dir, 'tmp', name), bytes);
      renameSync(path.join(dir, 'tmp', name), path.join(dir, 'new', name));
      chownSync(dir, path.join(dir, 'new', name));
    }
  }

  /** Every mail in a folder, with flags, without changing them. Missing folder: []. */
  async readFolder(mailbox: string, folder = 'INBOX'): Promise<StoredMail[]> {
    const client = await this.imap(mailbox);
    try {
      const list = await client.list();
      if (!list.some((f) => f.path.toLowerCase() === folder.toLowerCase())) return [];
      const lock = await client.getMailboxLock(folder, { readOnly: true });
      try {
        const out: StoredMail[] = [];
        const uids = (await client.search({ all: true }, { uid: true })) || [];
        if (uids.length === 0) return out;
        for await (const m of client.fetch(uids.join(','), { uid: true, source: true, flags: true }, { uid: true })) {
          out.push({ uid: m.uid, source: m.source!, flags: m.flags ?? new Set() });
        }
        return out;
      } finally {
        lock.release();
      }
    } catch (err) {
      throw imapFailure(`reading ${mailbox}/${folder}`, err);
    } finally {
      await client.logout();
    }
  }

  async stop(): Promise<void> {
    await Promise.allSettled([
      this.smtp?.stop(),
      this.dovecot.stop(),
      this.azurite.stop(),
      this.vault.stop(),
      this.idp.stop(),
    ]);
    if (this.ownsDir) rmSync(this.dir, { recursive: true, force: true });
  }
}

function imapFailure(what: string, err: unknown): Error {
  const e = err as { responseText?: string; message?: string };
  return new Error(`Local stack IMAP ${what} failed: ${e.responseText ?? e.message ?? String(err)}`, { cause: err });
}

/** Gives a file the owner of the folder it sits in (Dovecot's mail user when we run as root). */
function chownSync(dir: string, file: string): void {
  const { uid, gid } = statSync(dir);
  try {
    fsChown(file, uid, gid);
  } catch {
    // Not root: the file is ours, as is the folder.
  }
}

let signalsHandled = false;

/**
 * For a program that runs a local stack (the demo, the benchmarks): stopped by SIGINT or SIGTERM,
 * it exits normally instead, so the exit hooks of Dovecot and Azurite stop them too. Not for test
 * workers: the test runner manages their lifecycle, and a worker exiting on its signal breaks it.
 */
export function exitOnSignals(): void {
  if (signalsHandled) return;
  signalsHandled = true;
  for (const [signal, code] of [
    ['SIGINT', 130],
    ['SIGTERM', 143],
  ] as const) {
    process.once(signal, () => process.exit(code));
  }
}
