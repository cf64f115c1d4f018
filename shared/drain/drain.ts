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
  REPLIES_QUEUE,
  taskMessageSchema,
  type AcknowledgementsMessage,
  type AttachmentRef,
  type BlobRef,
  type TaskMessage,
} from '../contract/messages';
import type { TokenSource } from '../credentials/token';
import { describeError, InboxqError } from '../errors';
import { deriveTaskId, LeaseLostError, MailboxLease, partitionKey, type Ledger, type MessageRecord } from '../ledger/ledger';
import { ConversationBatch, conversationIdFor, ConversationStore, type ConversationDecision } from '../conversation/conversations';
import { headerSection, MailParseError, parseStream, type ParsedMail } from '../mail/parse';
import { splitQuoted } from '../mail/quoted';
import { MailboxSession, type MailboxEntry } from '../mailbox/imap';
import { judgeMail, type Judgement } from '../sender/judge';
import pLimit from 'p-limit';
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
/** Mails up to this size travel inline in their task (base64); larger ones go to Blob Storage. */
export const INLINE_RAW_LIMIT = 32 * 1024;
/** Mails up to this size are fetched whole with their batch; larger ones are streamed in chunks. */
export const SMALL_MAIL_BYTES = 4 * 1024 * 1024;
/** The whole sources a batch holds in memory at most; small mails past it wait for the next batch. */
const BATCH_SOURCE_BYTES = 32 * 1024 * 1024;
/** The run lease lasts this long and is renewed before each mail once a third of it has passed. */
export const LEASE_MS = 5 * 60_000;
/** Mails fetched and handled together (one FETCH of small sources, one of large headers, one MOVE): a table transaction holds 100 rows. */
export const BATCH_SIZE = 100;
/** Storage writes in flight at once within a batch. */
const STORAGE_CONCURRENCY = 16;
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

  let lease: Awaited<ReturnType<typeof MailboxLease.acquire>>;
  try {
    lease = await MailboxLease.acquire(deps.storage, config.mailbox, runId, LEASE_MS, now);
  } catch (err) {
    // Storage is down: no run can start. Said here, in the words every failed run uses (alerts count them).
    inboxqMetrics.run(config.mailbox, 'failed', now() - started);
    log.error(`Drain run failed: ${describeError(err)}`, { mailbox: config.mailbox, runId, outcome: 'failed', stoppedBecause: 'error' });
    throw err;
  }
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
    const mails = await session.listMails();
    let index = 0;
    while (index < mails.length) {
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
      const batch = nextBatch(mails, index, Math.min(BATCH_SIZE, config.drain.maxMessagesPerRun - index));
      for (const result of await drainBatch(deps, session, batch)) {
        inboxqMetrics.mail(config.mailbox, result.outcome);
        summary.counts.seen++;
        summary.counts[result.outcome]++;
        if (result.resumed) summary.counts.resumed++;
        summary.outcomes.push({ uid: result.uid, taskId: result.taskId, outcome: result.outcome, reasons: result.reasons });
      }
      index += batch.length;
    }
    summary.remaining = mails.length - Math.min(index, mails.length);
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

/** Up to `max` mails from `index` on, whose small sources together stay under BATCH_SOURCE_BYTES (at least one mail). */
function nextBatch(mails: MailboxEntry[], index: number, max: number): MailboxEntry[] {
  const batch: MailboxEntry[] = [];
  let bytes = 0;
  for (let i = index; i < mails.length && batch.length < max; i++) {
    const m = mails[i]!;
    const cost = m.size <= SMALL_MAIL_BYTES ? m.size : 0;
    if (batch.length > 0 && bytes + cost > BATCH_SOURCE_BYTES) break;
    bytes += cost;
    batch.push(m);
  }
  return batch;
}

interface OneResult {
  uid: number;
  taskId: string | null;
  outcome: MailOutcome;
  reasons: string[];
  resumed: boolean;
}

interface Item {
  uid: number;
  size: number;
  /** The whole source, for a small mail. */
  source: Buffer | undefined;
  judged: Judgement;
  headerSha256: string;
  taskId: string;
  record: MessageRecord;
  resumed: boolean;
  /** Where the mail goes when it leaves INBOX. */
  destination: 'processed' | 'quarantine';
  outcome?: MailOutcome;
  /** The conversation of an accepted mail, decided before its task is built. */
  conversation?: ConversationDecision;
}

/**
 * Drains a batch of mails. Each mail keeps its own order of steps (claim, then task, then record,
 * then removal); across mails the IMAP commands are batched (one FETCH of headers, one FETCH of
 * small sources, one MOVE) and the Storage writes run concurrently, a few at a time.
 */
async function drainBatch(deps: DrainDeps, session: MailboxSession, mails: MailboxEntry[]): Promise<OneResult[]> {
  const { config, ledger, log } = deps;
  const mailbox = config.mailbox;
  const limit = pLimit(STORAGE_CONCURRENCY);
  const step = async (s: DrainStep, uid: number, taskId?: string) => deps.onStep?.(s, { uid, taskId });
  const results: OneResult[] = [];

  // Small mails: the whole source in one FETCH, judged and parsed once. Large mails: only the
  // header section now (the verdict needs nothing else); the body is streamed once accepted.
  const small = mails.filter((m) => m.size <= SMALL_MAIL_BYTES).map((m) => m.uid);
  const sources = await session.fetchSources(small);
  const heads = await session.fetchHeads(mails.filter((m) => m.size > SMALL_MAIL_BYTES).map((m) => m.uid));
  const items: Item[] = [];
  const later: MailboxEntry[] = [];
  const seen = new Set<string>();
  for (const entry of mails) {
    const { uid, size } = entry;
    const source = sources.get(uid);
    const head = source ? { header: headerSection(source), size: source.length, internalDate: entry.internalDate } : heads.get(uid);
    if (!head) {
      results.push({ uid, taskId: null, outcome: 'gone', reasons: ['the mail left the inbox before it was read'], resumed: false });
      continue;
    }
    await step('fetched', uid);
    const headerSha256 = createHash('sha256').update(head.header).digest('hex');
    const judged = source ? await judgeMail(source, config.senderPolicy) : await judgeMail(head.header, config.senderPolicy, size);
    const messageId = judged.kind === 'mail' ? judged.parsed.messageId : null;
    const identity = messageId ? `mid:${messageId}` : `sha256:${headerSha256}`;
    const taskId = deriveTaskId(mailbox, identity);
    // Two copies of one mail in a batch would share a ledger row: the second waits for the first.
    if (seen.has(taskId)) {
      later.push(entry);
      continue;
    }
    seen.add(taskId);
    const parsed = judged.kind === 'mail' ? judged.parsed : undefined;
    const nowIso = new Date().toISOString();
    items.push({
      uid,
      size,
      source,
      judged,
      headerSha256,
      taskId,
      resumed: false,
      destination: 'processed',
      record: {
        mailbox,
        taskId,
        state: 'claimed',
        removed: false,
        identity,
        messageId,
        headerSha256,
        uid,
        uidValidity: session.uidValidity.toString(),
        sender: null,
        subject: parsed?.subject ?? '',
        inReplyTo: parsed?.inReplyTo ?? null,
        references: parsed?.references ?? [],
        conversationId: null,
        reasons: [],
        receivedAt: (head.internalDate ?? new Date()).toISOString(),
        claimedAt: nowIso,
        updatedAt: nowIso,
      },
    });
  }

  // Claim every mail before anything else happens to it.
  const claims = await ledger.claimMessages(items.map((i) => i.record));
  for (const [n, item] of items.entries()) {
    item.record = claims[n]!.record;
    item.resumed = !claims[n]!.created;
    await step('claimed', item.uid, item.taskId);
  }

  const logProps = (item: Item) => ({ mailbox, taskId: item.taskId, uid: item.uid, messageId: item.record.messageId });
  const toBuild: Item[] = [];
  for (const item of items) {
    const { record } = item;
    if (item.resumed && record.headerSha256 !== item.headerSha256 && record.state !== 'claimed') {
      // Same Message-ID, different headers: not the mail we processed. Never drop it, never run it twice.
      item.destination = 'quarantine';
      item.outcome = 'duplicate';
      record.reasons = [`another mail with Message-ID ${record.messageId} was already processed as task ${item.taskId}; this copy differs and was set aside`];
      log.warn('Mail reuses a processed Message-ID with different headers; moved to quarantine', logProps(item));
      continue;
    }
    if (record.state !== 'claimed') {
      // Done before (a resumed run, or another copy of a processed mail): only its removal is left.
      item.destination = record.state === 'quarantined' ? 'quarantine' : 'processed';
      if (record.removed) item.outcome = 'duplicate';
      continue;
    }
    if (item.judged.kind === 'mail' && item.judged.verdict.verdict === 'accept') toBuild.push(item);
  }

  // Each accepted mail's conversation, decided in order (a mail may continue one started earlier in
  // the batch) and recorded before any of their tasks is queued.
  if (toBuild.length > 0) {
    const conversations = new ConversationBatch(new ConversationStore(deps.storage, mailbox), async (taskId) => (await ledger.getMessage(mailbox, taskId))?.conversationId ?? null);
    for (const item of toBuild) {
      if (item.judged.kind !== 'mail') continue;
      const parsed = item.judged.parsed;
      item.conversation = await conversations.decide({
        taskId: item.taskId,
        sender: (item.judged.verdict.sender ?? '').toLowerCase(),
        subject: parsed.subject,
        messageId: parsed.messageId,
        inReplyTo: parsed.inReplyTo,
        references: parsed.references,
        receivedAt: item.record.receivedAt,
        firstAttempt: !item.resumed,
      });
      if (item.conversation.refusedConversationId) {
        log.warn('Mail points at a conversation of other participants; it starts a new one', {
          mailbox,
          taskId: item.taskId,
          uid: item.uid,
          conversationId: item.conversation.conversation.id,
          refusedConversationId: item.conversation.refusedConversationId,
        });
      }
    }
    await conversations.commit();
  }

  // What each mail's ledger row will say; written for the whole batch at once, after its tasks are queued.
  const changes = new Map<Item, Partial<MessageRecord>>();
  const decide = async (item: Item, task: TaskMessage | undefined, parseError?: string): Promise<void> => {
    const { judged } = item;
    if (judged.kind === 'malformed' || parseError) {
      const why = judged.kind === 'malformed' ? `the mail is malformed: ${judged.reason}` : `the mail's body can't be parsed (${parseError})`;
      changes.set(item, { state: 'quarantined', reasons: [`${why}; it was moved to ${config.drain.quarantineFolder}`], sender: judged.kind === 'mail' ? judged.verdict.sender : null });
      item.destination = 'quarantine';
    } else if (task) {
      await step('blobs-written', item.uid, item.taskId);
      await sendQueueMessage(deps.storage, config.tasksQueue, task, { mailbox });
      await step('queued', item.uid, item.taskId);
      const refused = item.conversation?.refusedConversationId;
      const reasons = refused
        ? [...judged.verdict.reasons, `it points at conversation ${refused} of other participants, so it started conversation ${task.conversation.id}`]
        : judged.verdict.reasons;
      changes.set(item, { state: 'queued', sender: judged.verdict.sender, reasons, conversationId: task.conversation.id });
      log.info('Mail queued as a task', { ...logProps(item), sender: judged.verdict.sender, attachments: task.attachments.length, bytes: item.size });
    } else {
      changes.set(item, { state: 'rejected', sender: judged.verdict.sender, reasons: judged.verdict.reasons });
    }
  };

  const build = async (item: Item, source: MailSource): Promise<void> => {
    if (item.judged.kind !== 'mail') return;
    let task: TaskMessage;
    try {
      task = await buildTask(deps, item.taskId, item.record, item.judged.parsed, item.judged.verdict.sender ?? '', item.conversation!, source);
    } catch (err) {
      // Only this mail's body is at fault: set it aside and go on with the inbox.
      if (!(err instanceof MailParseError)) throw err;
      return decide(item, undefined, err.message);
    }
    return decide(item, task);
  };

  const pending = items.filter((i) => i.record.state === 'claimed' && !i.outcome);
  const streamed = pending.filter((i) => toBuild.includes(i) && !i.source);
  await settleAll(
    pending
      .filter((i) => !streamed.includes(i))
      .map((item) => limit(() => (toBuild.includes(item) && item.source ? build(item, { kind: 'parsed', data: item.source }) : decide(item, undefined)))),
  );
  // A large mail is downloaded in chunks over the session, which carries one command at a time.
  for (const item of streamed) await build(item, { kind: 'stream', stream: await session.download(item.uid) });

  // Record the batch (one transaction), then log what was decided.
  const decided = [...changes.keys()];
  const recorded = await ledger.updateMessages(decided.map((item) => ({ record: item.record, patch: changes.get(item)! })));
  for (const [n, item] of decided.entries()) {
    item.record = recorded[n]!;
    if (item.record.state === 'rejected' && item.judged.kind === 'mail') {
      inboxqMetrics.rejected(mailbox, item.judged.verdict.code);
      log.warn(`Mail rejected: ${item.record.reasons.join('; ')}`, { ...logProps(item), sender: item.record.sender, code: item.judged.verdict.code });
    } else if (item.record.state === 'quarantined') {
      log.warn('Mail is malformed; moving it to quarantine', { ...logProps(item), reason: item.record.reasons[0] });
    }
    await step('recorded', item.uid, item.taskId);
  }

  // The first mails of new conversations are acknowledged: one message for the batch, each
  // acknowledgement then sent once as a reply of its own. Asked again for a mail a resumed run
  // finds queued but not yet removed.
  if (config.acknowledgement.enabled) {
    const taskIds = items.filter((i) => i.record.state === 'queued' && !i.record.removed && i.record.conversationId === conversationIdFor(i.taskId)).map((i) => i.taskId);
    if (taskIds.length > 0) {
      const message: AcknowledgementsMessage = { type: 'inboxq.acknowledgements', version: 1, mailbox, taskIds };
      await sendQueueMessage(deps.storage, REPLIES_QUEUE, message, { mailbox });
    }
  }

  // Every mail of the batch is recorded: now they leave INBOX, one command per destination.
  const processed = items.filter((i) => i.destination === 'processed').map((i) => i.uid);
  const quarantined = items.filter((i) => i.destination === 'quarantine').map((i) => i.uid);
  await session.remove(processed, config.drain.processedAction, config.drain.processedFolder);
  await session.remove(quarantined, 'move', config.drain.quarantineFolder);
  // Where each mail was when it left: after a renumbering (UIDVALIDITY change) it differs from the claim.
  const leaving = items.filter((i) => !i.record.removed && i.outcome !== 'duplicate');
  await ledger.markRemoved(
    mailbox,
    leaving.map((i) => ({ taskId: i.taskId, uid: i.uid, uidValidity: session.uidValidity.toString() })),
  );
  for (const item of items) {
    if (item.outcome === 'duplicate' && item.record.removed) log.info('Mail was already processed; removed the copy left in the inbox', logProps(item));
    else if (!item.outcome) await step('removed', item.uid, item.taskId);
    const state = item.record.state;
    results.push({
      uid: item.uid,
      taskId: item.taskId,
      outcome: item.outcome ?? (state === 'queued' ? 'queued' : state === 'rejected' ? 'rejected' : 'quarantined'),
      reasons: item.record.reasons,
      resumed: item.resumed,
    });
  }

  if (later.length > 0) results.push(...(await drainBatch(deps, session, later)));
  return results.sort((a, b) => a.uid - b.uid);
}

/**
 * Stores the mail and builds its task. The raw message goes to Blob Storage as it comes from IMAP
 * (a small mail fetched with its batch, a large one in chunks), then is parsed as a stream:
 * each attachment flows into its own blob, so memory holds the text parts and a few upload blocks,
 * never the whole mail.
 */
/**
 * Waits for every mail's work to finish, then throws the first failure: a run never ends while
 * writes of its mails are still under way.
 */
async function settleAll(work: Promise<unknown>[]): Promise<void> {
  const settled = await Promise.allSettled(work);
  const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}

/** A small mail's source, already parsed whole into `mail`; or a large mail's source as a stream. */
type MailSource = { kind: 'parsed'; data: Buffer } | { kind: 'stream'; stream: Readable };

async function buildTask(
  deps: DrainDeps,
  taskId: string,
  record: MessageRecord,
  mail: ParsedMail,
  sender: string,
  conversation: ConversationDecision,
  source: MailSource,
): Promise<TaskMessage> {
  const { config, storage } = deps;
  const blobs = new BlobStore(storage, MAIL_CONTAINER, config.mailbox);
  const prefix = `${partitionKey(config.mailbox)}/${taskId}`;

  // A small mail travels inline in its task (anything too big for a queue message goes to Blob
  // Storage); a large one is stored first and parsed back from the blob as a stream, attachment by
  // attachment into their own blobs.
  let raw: BlobRef | null = null;
  let rawInline: string | null = null;
  const storeAttachment = async (index: number, name: string | undefined, contentType: string, content: Buffer | Readable): Promise<AttachmentRef> => {
    const filename = sanitizeFilename(name, `attachment-${index + 1}`);
    const blobName = `${prefix}/attachments/${String(index + 1).padStart(4, '0')}-${filename}`;
    const blob = Buffer.isBuffer(content) ? await blobs.put(blobName, content, contentType) : await blobs.putStream(blobName, content, contentType);
    return { filename, contentType, size: blob.size, sha256: blob.sha256, blob };
  };
  let parsedBody: { text: string; html: string | null; attachments: AttachmentRef[] };
  if (source.kind === 'parsed') {
    if (source.data.length <= INLINE_RAW_LIMIT) rawInline = source.data.toString('base64');
    else raw = await blobs.put(`${prefix}/message.eml`, source.data, 'message/rfc822');
    const attachments: AttachmentRef[] = [];
    for (const [i, a] of mail.attachments.entries()) attachments.push(await storeAttachment(i, a.filename, a.contentType, a.content));
    parsedBody = { text: mail.text, html: mail.html, attachments };
  } else {
    raw = await blobs.putStream(`${prefix}/message.eml`, source.stream, 'message/rfc822');
    parsedBody = await parseStream(await blobs.getStream(raw.name), (a) => storeAttachment(a.index, a.filename, a.contentType, a.content));
  }
  const attachments = parsedBody.attachments;

  // Text parts travel inline when they fit, else in Blob Storage; the new text and the quoted
  // history are told apart for workers that want only what the sender just wrote.
  const inlineOrBlob = async (name: string, text: string): Promise<[string | null, BlobRef | null]> =>
    Buffer.byteLength(text, 'utf8') > INLINE_TEXT_LIMIT ? [null, await blobs.put(`${prefix}/${name}`, text, 'text/plain; charset=utf-8')] : [text, null];
  const split = splitQuoted(parsedBody.text);
  const [text, textBlob] = await inlineOrBlob('body.txt', parsedBody.text);
  const [newText, newTextBlob] = await inlineOrBlob('body-new.txt', split.newText);
  const [quotedText, quotedTextBlob] = await inlineOrBlob('body-quoted.txt', split.quotedText);
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
    conversation: {
      id: conversation.conversation.id,
      isNew: conversation.isNew,
      continuedBy: conversation.continuedBy,
      previousTaskIds: conversation.previousTaskIds,
    },
    body: { text, textBlob, htmlBlob, newText, newTextBlob, quotedText, quotedTextBlob },
    attachments,
    attachmentsBlob: null,
    raw,
    rawInline,
  };
  // Too big for a queue message with the mail inline: the mail goes to Blob Storage after all.
  let size = encodedSize(task);
  if (task.rawInline !== null && size > MAX_QUEUE_MESSAGE_CHARS - 1024 && source.kind === 'parsed') {
    task.raw = await blobs.put(`${prefix}/message.eml`, source.data, 'message/rfc822');
    task.rawInline = null;
    size = encodedSize(task);
  }
  // Inline text parts that together are too big move to Blob Storage, the quoted history first.
  for (const [field, blobField, name] of [
    ['quotedText', 'quotedTextBlob', 'body-quoted.txt'],
    ['text', 'textBlob', 'body.txt'],
    ['newText', 'newTextBlob', 'body-new.txt'],
  ] as const) {
    const inline = task.body[field];
    if (size <= MAX_QUEUE_MESSAGE_CHARS - 1024 || inline === null || inline === '') continue;
    task.body[blobField] = await blobs.put(`${prefix}/${name}`, inline, 'text/plain; charset=utf-8');
    task.body[field] = null;
    size = encodedSize(task);
  }
  // A long attachment list (or many recipients, or a long subject) could push the message past
  // 64 KiB: the list moves to a blob, and the rest is trimmed to fit.
  if (size > MAX_QUEUE_MESSAGE_CHARS - 1024) {
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
