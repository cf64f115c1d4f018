/**
 * Dovecot as the IMAP server, in the foreground with its own config, on 127.0.0.1:
 * implicit TLS (like outlook.office365.com:993), AUTHENTICATE XOAUTH2 only, each token checked by
 * the identity provider's introspection endpoint: signature, issuer, audience
 * https://outlook.office365.com, expiry, IMAP.AccessAsApp. LMTP on a loopback port takes deliveries from the SMTP server; a `+Folder`
 * detail delivers into that folder (the Sent copy).
 *
 * App-only tokens carry no mailbox name, so the passdb compares a constant on both sides
 * (username_format = app-only): any mailbox, as an app with FullAccess on every mailbox would.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

import type { Certificates } from './certs';
import type { IdentityProvider } from './idp';
import { freePort, waitForPort } from './net';

const DOVECOT_BINARIES = ['/usr/sbin/dovecot', '/usr/local/sbin/dovecot'];

export function findDovecot(): string | undefined {
  return DOVECOT_BINARIES.find((p) => existsSync(p));
}

export class LocalDovecot {
  imapPort = 0;
  lmtpPort = 0;
  private child: ChildProcess | undefined;
  private output = '';
  private readonly instance = `inboxq-${randomBytes(6).toString('hex')}.localstack`;

  constructor(private readonly dir: string) {}

  async start(certs: Certificates, idp: IdentityProvider): Promise<void> {
    const binary = findDovecot();
    if (!binary) {
      throw new Error(
        'Dovecot is not installed. Run `bash scripts/setup.sh` (it runs apt-get install -y dovecot-imapd dovecot-lmtpd) and try again.',
      );
    }
    const d = (...p: string[]) => path.join(this.dir, ...p);
    rmSync(this.dir, { recursive: true, force: true });
    for (const sub of ['run', 'state', 'home']) mkdirSync(d(sub), { recursive: true });
    chmodSync(this.dir, 0o755);
    chmodSync(d('home'), 0o777);
    [this.imapPort, this.lmtpPort] = [await freePort(), await freePort()];

    const { uid, gid, username } = os.userInfo();
    const isRoot = uid === 0;
    // As root, the packaged unprivileged users run the services; otherwise everything runs as us.
    const internalUser = isRoot ? 'dovecot' : username;
    const loginUser = isRoot ? 'dovenull' : username;
    const mailUid = isRoot ? 'dovecot' : String(uid);
    const mailGid = isRoot ? 'dovecot' : String(gid);

    writeFileSync(
      d('oauth2.conf'),
      [
        // Dovecot 2.3.19's local JWT validation crashes its auth process now and then (signal 11),
        // so the identity provider decides, as Exchange does: signature, issuer, audience, expiry
        // and the IMAP.AccessAsApp role (localstack/idp.ts, introspect).
        'introspection_mode = post',
        `introspection_url = ${idp.url}/${idp.tenantId}/introspect`,
        `tls_ca_cert_file = ${certs.caFile}`,
        'active_attribute = active',
        'active_value = true',
        'username_attribute = tid',
        'username_format = app-only',
        '',
      ].join('\n'),
    );
    // The LMTP greeting names this instance, so the stack can tell its Dovecot from another
    // process that took one of the ports between picking and binding them.
    const writeConfig = () =>
      writeFileSync(
        d('dovecot.conf'),
        `
hostname = ${this.instance}
base_dir = ${d('run')}
state_dir = ${d('state')}
log_path = /dev/stderr
info_log_path = /dev/stderr
protocols = imap lmtp
listen = 127.0.0.1
first_valid_uid = 1
auth_failure_delay = 0
auth_verbose = yes
default_internal_user = ${internalUser}
default_login_user = ${loginUser}
ssl = required
ssl_cert = <${certs.certFile}
ssl_key = <${certs.keyFile}
auth_mechanisms = xoauth2
passdb {
  driver = oauth2
  mechanisms = xoauth2
  args = ${d('oauth2.conf')}
}
userdb {
  driver = static
  args = uid=${mailUid} gid=${mailGid} home=${d('home')}/%Lu allow_all_users=yes
}
mail_location = maildir:~/Maildir
# A quota reported over IMAP (QUOTA), as a server that has one does: 10 GB per mailbox.
mail_plugins = $mail_plugins quota
protocol imap {
  mail_plugins = $mail_plugins imap_quota
}
plugin {
  quota = count:User quota
  quota_rule = *:storage=10G
  quota_vsizes = yes
}
lmtp_save_to_detail_mailbox = yes
recipient_delimiter = +
imap_max_line_length = 2M
service imap-login {
  ${isRoot ? '' : 'chroot ='}
  inet_listener imap {
    port = 0
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = ${this.imapPort}
    ssl = yes
  }
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = ${this.lmtpPort}
  }
}
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
${isRoot ? '' : 'service auth-worker {\n  user = $default_internal_user\n}\nservice auth {\n  user = $default_internal_user\n}'}
namespace inbox {
  inbox = yes
  mailbox Sent {
    special_use = \\Sent
    auto = subscribe
  }
  mailbox Trash {
    special_use = \\Trash
    auto = subscribe
  }
}
`,
      );
    for (let attempt = 1; ; attempt++) {
      writeConfig();
      try {
        await this.launch();
        if (await this.greetsAsThisInstance()) return;
      } catch (err) {
        if (attempt === 3) throw err;
      }
      await this.stop();
      if (attempt === 3)
        throw new Error(
          `Dovecot's ports were taken by other processes three times (last: ${this.imapPort}, ${this.lmtpPort})`,
        );
      [this.imapPort, this.lmtpPort] = [await freePort(), await freePort()];
    }
  }

  /** True when the LMTP port is served by this Dovecot (its greeting names this instance). */
  private greetsAsThisInstance(): Promise<boolean> {
    return new Promise((resolve) => {
      const socket = net.connect({ host: '127.0.0.1', port: this.lmtpPort });
      let greeting = '';
      const done = (ok: boolean) => {
        socket.destroy();
        resolve(ok);
      };
      socket.setTimeout(5000, () => done(false));
      socket.on('data', (c: Buffer) => {
        greeting += c.toString('latin1');
        if (greeting.includes('\r\n')) done(greeting.includes(this.instance));
      });
      socket.on('error', () => done(false));
    });
  }

  private async launch(): Promise<void> {
    // Its own process group: stopping it stops the IMAP session processes too, as a server outage
    // would (the master alone exiting leaves open sessions running).
    const child = spawn(findDovecot()!, ['-F', '-c', path.join(this.dir, 'dovecot.conf')], {
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    this.child = child;
    const killGroup = () => signalGroup(child.pid, 'SIGKILL');
    process.once('exit', killGroup);
    child.once('exit', () => process.removeListener('exit', killGroup));
    const keep = (c: Buffer) => {
      this.output = (this.output + c.toString()).slice(-20_000);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    const exited = new Promise<never>((_, reject) =>
      child.once('exit', (code) =>
        reject(new Error(`Dovecot exited at start (code ${code}):\n${this.output.slice(-2000)}`)),
      ),
    );
    exited.catch(() => {});
    await Promise.race([
      Promise.all([
        waitForPort(this.imapPort, 10_000, 'Dovecot IMAP'),
        waitForPort(this.lmtpPort, 10_000, 'Dovecot LMTP'),
      ]),
      exited,
    ]);
  }

  /** Dovecot's log so far (authentication refusals and the like), for test failure messages. */
  log(): string {
    return this.output;
  }

  /** Stops the server and every session it serves; open connections drop. */
  async stop(): Promise<void> {
    const child = this.child;
    if (!child) return;
    if (child.exitCode === null && child.signalCode === null) {
      const done = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      signalGroup(child.pid, 'SIGTERM');
      const timer = setTimeout(() => signalGroup(child.pid, 'SIGKILL'), 3000);
      await done;
      clearTimeout(timer);
    }
    // Session processes that outlived the master.
    signalGroup(child.pid, 'SIGKILL');
    this.child = undefined;
  }

  /** Stops and starts it again on the same ports with the same mail (fault injection). */
  async restart(): Promise<void> {
    await this.stop();
    await this.launch();
  }
}

function signalGroup(pid: number | undefined, signal: NodeJS.Signals): void {
  if (!pid) return;
  try {
    process.kill(-pid, signal);
  } catch {
    // The group is gone already.
  }
}
