/**
 * One drain run of one mailbox: every mail in INBOX, oldest first, becomes a queued task or a
 * recorded rejection, and only then leaves the inbox.
 *
 * The order of steps is the guarantee (docs/delivery-guarantees.md):
 *   lease -> header (BODY.PEEK[HEADER]) -> claim in the ledger -> verdict
 *   -> raw message and attachments streamed to Blob Storage -> task on the queue
 *   -> ledger: queued/rejected/quarantined -> remove from INBOX -> ledger: removed
 * A crash anywhere leaves the mail in INBOX with a ledger row telling the next run where to resume;
 * the task id is derived from the Message-ID, so a resumed mail keeps its identity.
 *
 * Failures of the mailbox, of Storage or of the token end the run (the mail stays for the next one).
 * A mail that isn't a mail at all is recorded, moved to the quarantine folder, and the run goes on.
 */
import { createHash, randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import type { InboxqConfig } from '../config/settings';
import {
  MAIL_CONTAINER,
  MAX_QUEUE_MESSAGE_CHARS,
  TASKS_QUEUE,
  taskMessageSchema,
  type AttachmentRef,
  type BlobRef,
  type TaskMessage,
} from '../contract/messages';
import type { TokenSource } from '../credentials/token';
import { describeError, InboxqError } from '../errors';
import { deriveTaskId, LeaseLostError, MailboxLease, partitionKey, type Ledger, type MessageRecord } from '../ledger/ledger';
import { MailParseError, parseStream, type ParsedMail } from '../mail/parse';
import { MailboxSession } from '../mailbox/imap';
import { judgeMail } from '../sender/judge';
import { BlobStore, sanitizeFilename } from '../storage/blobs';
import type { StorageClients } from '../storage/clients';
import { encodedSize, sendQueueMessage } from '../storage/queues';
import type { Logger } from '../telemetry/log';
import { inboxqMetrics } from '../telemetry/metrics';

/** Step boundaries, named so tests can stop a run at each one. */
export type DrainStep = 'leased' | 'fetched' | 'claimed' | 'blobs-written' | 'queued' | 'recorded' | 'removed';

export interface DrainDeps {
  config: InboxqConfig;
  tokens: TokenSource;
  ledger: Ledger;
  storage: StorageClients;
  log: Logger;
  /** Called at each step boundary of each mail (crash and fault injection in tests). */
  onStep?: (step: DrainStep, info: { uid: number; taskId?: string }) => void | Promise<void>;
  now?: () => number;
}

export type MailOutcome = 'queued' | 'rejected' | 'quarantined' | 'duplicate' | 'gone';

export interface DrainSummary {
  runId: string;
  mailbox: string;
  startedAt: string;
  durationMs: number;
  /** Why the run ended: the inbox was empty, the time budget or message limit was reached, another run holds the lease, or an error. */
  stoppedBecause: 'empty' | 'budget' | 'limit' | 'leased-elsewhere' | 'error';
  counts: Record<MailOutcome, number> & { seen: number; resumed: number; throttled: number; expired: number };
  /** Mails left in the inbox for the next run. */
  remaining: number;
  outcomes: { uid: number; taskId: string | null; outcome: MailOutcome; reasons: string[] }[];
  error: string | null;
}

/** Inline text bodies up to this size; larger ones go to Blob Storage. */
export const INLINE_TEXT_LIMIT = 16 * 1024;
/** Mails up to this size are fetched in one command; larger ones are streamed in chunks. */
export const SMALL_MAIL_BYTES = 1024 * 1024;
/** The run lease lasts this long and is renewed before each mail once a third of it has passed. */
export const LEASE_MS = 5 * 60_000;
/** Retention clean-up handles at most this many expired mails per run. */
const RETENTION_BATCH = 100;

export async function drainMailbox(deps: DrainDeps): Promise<DrainSummary> {
  const { config, log, ledger } = deps;
  const now = deps.now ?? Date.now;
  const started = now();
  const runId = randomUUID();
  const summary: DrainSummary = {
    runId,
    mailbox: config.mailbox,
    startedAt: new Date(started).toISOString(),
    durationMs: 0,
    stoppedBecause: 'empty',
    counts: { seen: 0, queued: 0, rejected: 0, quarantined: 0, duplicate: 0, gone: 0, resumed: 0, throttled: 0, expired: 0 },
    remaining: 0,
    outcomes: [],
    error: null,
  };

  const lease = await MailboxLease.acquire(deps.storage, config.mailbox, runId, LEASE_MS, now);
  if (!(lease instanceof MailboxLease)) {
    summary.stoppedBecause = 'leased-elsewhere';
    inboxqMetrics.run(config.mailbox, 'leased-elsewhere', now() - started);
    log.info('Another drain run holds this mailbox; this run does nothing', { mailbox: config.mailbox, runId, heldBy: lease.heldBy, until: new Date(lease.until).toISOString() });
    return summary;
  }
  await deps.onStep?.('leased', { uid: 0 });

  let session: MailboxSession | undefined;
  let failure: unknown;
  let renewedAt = now();
  try {
    session = await MailboxSession.open({ config, tokens: deps.tokens, log });
    const uids = await session.listUids();
    let index = 0;
    for (; index < uids.length; index++) {
      if (index >= config.drain.maxMessagesPerRun) {
        summary.stoppedBecause = 'limit';
        break;
      }
      if (now() - started > config.drain.runBudgetMs) {
        summary.stoppedBecause = 'budget';
        break;
      }
      if (now() - renewedAt > LEASE_MS / 3) {
        await lease.renew();
        renewedAt = now();
      }
      const uid = uids[index]!;
      const result = await drainOne(deps, session, uid);
      inboxqMetrics.mail(config.mailbox, result.outcome);
      summary.counts.seen++;
      summary.counts[result.outcome]++;
      if (result.resumed) summary.counts.resumed++;
      summary.outcomes.push({ uid, taskId: result.taskId, outcome: result.outcome, reasons: result.reasons });
    }
    summary.remaining = uids.length - index;
    if (config.drain.retentionDays > 0 && summary.stoppedBecause === 'empty') {
      summary.counts.expired = await expireOldMail(deps, now);
    }
  } catch (err) {
    failure = err;
    summary.stoppedBecause = 'error';
    summary.error = err instanceof LeaseLostError ? 'the run lease was taken over by another run; it continues from here' : describeError(err);
  } finally {
    summary.counts.throttled = session?.throttled ?? 0;
    await session?.close();
    await lease.release();
  }

  summary.durationMs = now() - started;
  const outcome = failure ? 'failed' : summary.remaining > 0 ? 'partial' : 'ok';
  inboxqMetrics.run(config.mailbox, outcome, summary.durationMs);
  try {
    const { seen, queued, rejected, quarantined, duplicate, resumed, throttled } = summary.counts;
    await ledger.recordRun(config.mailbox, {
      runId,
      startedAt: summary.startedAt,
      finishedAt: new Date(now()).toISOString(),
      outcome,
      counts: { seen, queued, rejected, quarantined, duplicate, resumed, throttled, failedRuns: failure ? 1 : 0 },
      error: summary.error,
    });
  } catch (err) {
    log.warn('Could not record the run in the ledger', { mailbox: config.mailbox, runId, error: describeError(err) });
  }

  const props = {
    mailbox: config.mailbox,
    runId,
    outcome,
    durationMs: summary.durationMs,
    seen: summary.counts.seen,
    queued: summary.counts.queued,
    rejected: summary.counts.rejected,
    quarantined: summary.counts.quarantined,
    duplicates: summary.counts.duplicate,
    throttled: summary.counts.throttled,
    remaining: summary.remaining,
    stoppedBecause: summary.stoppedBecause,
  };
  if (failure) {
    log.error(`Drain run failed: ${summary.error}`, props);
    if (failure instanceof LeaseLostError) return summary;
    throw failure;
  }
  log.info('Drain run finished', props);
  return summary;
}

interface OneResult {
  taskId: string | null;
  outcome: MailOutcome;
  reasons: string[];
  resumed: boolean;
}

async function drainOne(deps: DrainDeps, session: MailboxSession, uid: number): Promise<OneResult> {
  const { config, ledger, log } = deps;
  const step = async (s: DrainStep, taskId?: string) => deps.onStep?.(s, { uid, taskId });
  const mailbox = config.mailbox;

  // The verdict needs only the header section: the body is read once the mail is accepted.
  const head = await session.fetchHead(uid);
  if (!head) return { taskId: null, outcome: 'gone', reasons: ['the mail left the inbox before it was read'], resumed: false };
  await step('fetched');
  const headerSha256 = createHash('sha256').update(head.header).digest('hex');
  const judged = await judgeMail(head.header, config.senderPolicy, head.size);
  const parsed = judged.kind === 'mail' ? judged.parsed : undefined;

  const identity = parsed?.messageId ? `mid:${parsed.messageId}` : `sha256:${headerSha256}`;
  const taskId = deriveTaskId(mailbox, identity);
  const nowIso = new Date().toISOString();
  const claim = await ledger.claimMessage({
    mailbox,
    taskId,
    state: 'claimed',
    removed: false,
    identity,
    messageId: parsed?.messageId ?? null,
    headerSha256,
    uid,
    uidValidity: session.uidValidity.toString(),
    sender: null,
    subject: parsed?.subject ?? '',
    inReplyTo: parsed?.inReplyTo ?? null,
    references: parsed?.references ?? [],
    reasons: [],
    receivedAt: (head.internalDate ?? new Date()).toISOString(),
    claimedAt: nowIso,
    updatedAt: nowIso,
  });
  let record = claim.record;
  const resumed = !claim.created;
  await step('claimed', taskId);
  const logProps = { mailbox, taskId, uid, messageId: parsed?.messageId ?? null };

  if (resumed && record.headerSha256 !== headerSha256 && record.state !== 'claimed') {
    // Same Message-ID, different headers: not the mail we processed. Never drop it, never run it twice.
    const reasons = [`another mail with Message-ID ${parsed?.messageId} was already processed as task ${taskId}; this copy differs and was set aside`];
    log.warn('Mail reuses a processed Message-ID with different headers; moved to quarantine', logProps);
    await session.remove(uid, 'move', config.drain.quarantineFolder);
    return { taskId, outcome: 'duplicate', reasons, resumed };
  }

  if (record.state === 'claimed') {
    if (judged.kind === 'malformed') {
      const reasons = [`the mail is malformed: ${judged.reason}; it was moved to ${config.drain.quarantineFolder}`];
      record = await ledger.updateMessage(record, { state: 'quarantined', reasons });
      await step('recorded', taskId);
      log.warn('Mail is malformed; moving it to quarantine', { ...logProps, reason: reasons[0] });
    } else {
      const { verdict, parsed: mail } = judged;
      if (verdict.verdict === 'accept') {
        let task: TaskMessage | undefined;
        try {
          task = await buildTask(deps, session, uid, head.size, taskId, record, mail, verdict.sender ?? '');
        } catch (err) {
          // Only this mail's body is at fault: set it aside and go on with the inbox.
          if (!(err instanceof MailParseError)) throw err;
          const reasons = [`the mail's body can't be parsed (${err.message}); it was moved to ${config.drain.quarantineFolder}`];
          record = await ledger.updateMessage(record, { state: 'quarantined', sender: verdict.sender, reasons });
          log.warn('Mail body is malformed; moving it to quarantine', { ...logProps, reason: reasons[0] });
        }
        if (task) {
          await step('blobs-written', taskId);
          await sendQueueMessage(deps.storage, TASKS_QUEUE, task, { mailbox });
          await step('queued', taskId);
          record = await ledger.updateMessage(record, { state: 'queued', sender: verdict.sender, reasons: verdict.reasons });
          log.info('Mail queued as a task', { ...logProps, sender: verdict.sender, attachments: task.attachments.length, bytes: task.raw.size });
        }
      } else {
        record = await ledger.updateMessage(record, { state: 'rejected', sender: verdict.sender, reasons: verdict.reasons });
        inboxqMetrics.rejected(mailbox, verdict.code);
        log.warn(`Mail rejected: ${verdict.reasons.join('; ')}`, { ...logProps, sender: verdict.sender, code: verdict.code });
      }
      await step('recorded', taskId);
    }
  }

  // A row already marked removed means this is another copy of a processed mail (Exchange can
  // re-upload old mail under new UIDs): it goes the same way, and nothing else happens.
  const alreadyRemoved = record.removed;
  const quarantined = record.state === 'quarantined';
  await session.remove(uid, quarantined ? 'move' : config.drain.processedAction, quarantined ? config.drain.quarantineFolder : config.drain.processedFolder);
  if (alreadyRemoved) {
    log.info('Mail was already processed; removed the copy left in the inbox', logProps);
    return { taskId, outcome: 'duplicate', reasons: record.reasons, resumed };
  }
  // Where the mail was when it left: after a renumbering (UIDVALIDITY change) it differs from the claim.
  await ledger.updateMessage(record, { removed: true, uid, uidValidity: session.uidValidity.toString() });
  await step('removed', taskId);
  return { taskId, outcome: record.state === 'queued' ? 'queued' : record.state === 'rejected' ? 'rejected' : 'quarantined', reasons: record.reasons, resumed };
}

/**
 * Stores the mail and builds its task. The raw message goes to Blob Storage as it comes from IMAP
 * (one command for a small mail, chunks for a large one), then is parsed from there as a stream:
 * each attachment flows into its own blob, so memory holds the text parts and a few upload blocks,
 * never the whole mail.
 */
async function buildTask(
  deps: DrainDeps,
  session: MailboxSession,
  uid: number,
  size: number,
  taskId: string,
  record: MessageRecord,
  mail: ParsedMail,
  sender: string,
): Promise<TaskMessage> {
  const { config, storage } = deps;
  const blobs = new BlobStore(storage, MAIL_CONTAINER, config.mailbox);
  const prefix = `${partitionKey(config.mailbox)}/${taskId}`;

  let raw: BlobRef;
  let body: Readable;
  if (size <= SMALL_MAIL_BYTES) {
    const fetched = await session.fetchSource(uid);
    if (!fetched) throw new InboxqError(`Mail UID ${uid} left the inbox while it was being stored`, { mailbox: config.mailbox, retryable: true });
    raw = await blobs.put(`${prefix}/message.eml`, fetched.source, 'message/rfc822');
    body = Readable.from([fetched.source]);
  } else {
    raw = await blobs.putStream(`${prefix}/message.eml`, await session.download(uid), 'message/rfc822');
    body = await blobs.getStream(raw.name);
  }

  const parsedBody = await parseStream(body, async (a): Promise<AttachmentRef> => {
    const filename = sanitizeFilename(a.filename, `attachment-${a.index + 1}`);
    const blob = await blobs.putStream(`${prefix}/attachments/${String(a.index + 1).padStart(4, '0')}-${filename}`, a.content, a.contentType);
    return { filename, contentType: a.contentType, size: blob.size, sha256: blob.sha256, blob };
  });
  const attachments = parsedBody.attachments;

  const textBytes = Buffer.byteLength(parsedBody.text, 'utf8');
  const textBlob: BlobRef | null = textBytes > INLINE_TEXT_LIMIT ? await blobs.put(`${prefix}/body.txt`, parsedBody.text, 'text/plain; charset=utf-8') : null;
  const htmlBlob: BlobRef | null = parsedBody.html ? await blobs.put(`${prefix}/body.html`, parsedBody.html, 'text/html; charset=utf-8') : null;

  const task: TaskMessage = {
    type: 'inboxq.task',
    version: 1,
    taskId,
    mailbox: config.mailbox,
    receivedAt: record.receivedAt,
    queuedAt: new Date().toISOString(),
    from: { address: sender, name: mail.fromName },
    to: mail.to,
    cc: mail.cc,
    subject: mail.subject,
    messageId: mail.messageId,
    inReplyTo: mail.inReplyTo,
    references: mail.references,
    body: { text: textBlob ? null : parsedBody.text, textBlob, htmlBlob },
    attachments,
    attachmentsBlob: null,
    raw,
  };
  // A long attachment list (or many recipients, or a long subject) could push the message past
  // 64 KiB: the list moves to a blob, and the rest is trimmed to fit.
  if (encodedSize(task) > MAX_QUEUE_MESSAGE_CHARS - 1024) {
    task.attachmentsBlob = await blobs.put(`${prefix}/attachments.json`, JSON.stringify(attachments), 'application/json');
    task.attachments = [];
    task.to = task.to.slice(0, 50);
    task.cc = task.cc.slice(0, 50);
    task.references = task.references.slice(-20);
    task.subject = task.subject.slice(0, 2000);
    task.from.name = task.from.name.slice(0, 500);
  }
  const checked = taskMessageSchema.safeParse(task);
  if (!checked.success) {
    throw new InboxqError(`Task ${taskId} does not match the task contract: ${checked.error.issues.map((i) => i.path.join('.')).join(', ')}`, {
      mailbox: config.mailbox,
      hint: 'this is a bug in inboxq; the mail stays in the inbox',
    });
  }
  return checked.data;
}

/** Deletes the blobs and ledger rows of mail older than the retention setting, a batch per run. */
async function expireOldMail(deps: DrainDeps, now: () => number): Promise<number> {
  const { config, ledger } = deps;
  const cutoff = new Date(now() - config.drain.retentionDays * 86_400_000).toISOString();
  const old = await ledger.listMessagesClaimedBefore(config.mailbox, cutoff, RETENTION_BATCH);
  const blobs = new BlobStore(deps.storage, MAIL_CONTAINER, config.mailbox);
  for (const row of old) {
    await blobs.deletePrefix(`${partitionKey(config.mailbox)}/${row.taskId}/`);
    await ledger.deleteMessage(row);
  }
  if (old.length > 0) deps.log.info('Expired stored mail past its retention', { mailbox: config.mailbox, count: old.length, cutoff });
  return old.length;
}
