/**
 * The round-trip benchmark (`BENCH_ONLY=rtt npm run bench`, and part of `npm run bench`): inboxq as
 * production sees its peers, tens of milliseconds away. A delay proxy (localstack/delay-proxy.ts)
 * sits in front of Dovecot, each Azurite service and the SMTP server, and adds a round trip to
 * every exchange: 20 ms to Exchange and 4 ms to Storage (same region), then 80 ms and 10 ms (a
 * mailbox in another geography).
 *
 *   drain    inboxq's drain of N small mails, against a pipelined client: one IMAP FETCH of every
 *            source, 16 queue sends in flight, then delete (the least a drain can cost in round trips);
 *            and, reported without a goal, against the same client writing the ledger rows inboxq's
 *            guarantees rest on, in the same transactions (bench-rows.ts): what is left is inboxq's own;
 *            and inboxq draining N follow-ups of the mails it just drained (each continues its
 *            conversation: its lookups are what a mailbox of conversations adds), against the same client
 *   replies  inboxq's reply function over N replies on its queue, against a pooled nodemailer client
 *            with the connections inboxq may use (Exchange allows 3 per mailbox), all sent at once
 *
 * Both sides use warm connections (inboxq its kept IMAP session, the client one opened before it is
 * timed). Ratios are per pair, alternating which side goes first; the median is reported, with the
 * round trips inboxq started, counted at the proxies.
 */
import { QueueClient } from '@azure/storage-queue';
import nodemailer from 'nodemailer';
import pLimit from 'p-limit';

import { EXCHANGE_ROLES, type LocalStack } from '../localstack';
import { DelayProxyProcess } from '../localstack/delay-proxy';
import { EXCHANGE_AUDIENCE } from '../localstack/idp';
import { runQueueTrigger } from '../localstack/queue-runner';
import { runtimeFor } from '../localstack/runtime';
import { benchMail } from '../localstack/sample-mail';
import { encodeQueueMessage, REPLIES_QUEUE, TASKS_QUEUE } from '../shared/contract/messages';
import { drainMailbox } from '../shared/drain/drain';
import { createHandlers } from '../shared/host/handlers';
import { deploymentFor } from '../shared/host/runtime';
import { composeReply } from '../shared/reply/compose';
import { closeSmtpPools } from '../shared/reply/smtp';
import { silentLogger } from '../shared/telemetry/log';
import { bareDrainWithRows, createLedgerTables, ledgerTables } from './bench-rows';

export interface RttProfile {
  name: string;
  imapMs: number;
  storageMs: number;
}

export const RTT_PROFILES: RttProfile[] = [
  { name: '20', imapMs: 20, storageMs: 4 },
  { name: '80', imapMs: 80, storageMs: 10 },
];

export interface RttSide {
  rate: number;
}

export interface RttProfileResult {
  profile: RttProfile;
  drain: {
    inboxq: number;
    pipelined: number;
    ratio: number;
    /** The pipelined client writing the same ledger rows, and inboxq's ratio to it (no goal). */
    rows: number;
    rowsRatio: number;
    imapRoundTrips: number;
    storageRoundTrips: number;
    rowsStorageRoundTrips: number;
    /** inboxq draining follow-ups of the mails it drained, and its ratio to the pipelined client (no goal). */
    followUps: number;
    followUpsRatio: number;
    followUpsStorageRoundTrips: number;
  };
  replies: {
    inboxq: number;
    pooled: number;
    ratio: number;
    smtpRoundTripsPerReply: number;
    storageRoundTripsPerReply: number;
  };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

export async function measureRtt(
  stack: LocalStack,
  log: (line: string) => void,
  options: { mails: number; replies: number; rounds: number },
): Promise<RttProfileResult[]> {
  // Each proxy in a process of its own: the network's delay doesn't wait on this one's event loop.
  const imap = new DelayProxyProcess(stack.dovecot.imapPort, 0);
  const smtp = new DelayProxyProcess(stack.smtp.port, 0);
  const blob = new DelayProxyProcess(stack.azurite.blobPort, 0);
  const queue = new DelayProxyProcess(stack.azurite.queuePort, 0);
  const table = new DelayProxyProcess(stack.azurite.tablePort, 0);
  const storageProxies = [blob, queue, table];
  await Promise.all([imap, smtp, ...storageProxies].map((p) => p.start()));
  try {
    const connection = stack.azurite.connectionString
      .replace(`:${stack.azurite.blobPort}/`, `:${blob.port}/`)
      .replace(`:${stack.azurite.queuePort}/`, `:${queue.port}/`)
      .replace(`:${stack.azurite.tablePort}/`, `:${table.port}/`);
    const mailbox = 'bench-rtt@company.test';
    const bare = 'bench-rtt-bare@company.test';
    const withRows = 'bench-rtt-rows@company.test';
    const settings = stack.settings(mailbox, {
      AzureWebJobsStorage: connection,
      INBOXQ_IMAP_PORT: String(imap.port),
      INBOXQ_SMTP_PORT: String(smtp.port),
      INBOXQ_AUTHORIZED_SENDERS: '*@partner.test',
      INBOXQ_MAX_MESSAGES_PER_RUN: String(options.mails * 4),
      INBOXQ_RUN_BUDGET_SECONDS: '3600',
      INBOXQ_MAIL_RETENTION_DAYS: '0',
      // Like the client, inboxq deletes (BENCH_RTT_PROCESSED_ACTION=move: its default, one IMAP command instead of two).
      INBOXQ_PROCESSED_ACTION: process.env['BENCH_RTT_PROCESSED_ACTION'] ?? 'delete',
      INBOXQ_SMTP_MAX_PER_MINUTE: '0',
    });
    const rt = runtimeFor(settings);
    const handlers = createHandlers(() => deploymentFor(settings));
    const token = await stack.idp.mint({ roles: EXCHANGE_ROLES }, { audience: EXCHANGE_AUDIENCE });
    const tasks = new QueueClient(connection, TASKS_QUEUE);
    const replies = new QueueClient(connection, REPLIES_QUEUE);
    const repliesDirect = new QueueClient(stack.azurite.connectionString, REPLIES_QUEUE);
    await tasks.createIfNotExists();
    await replies.createIfNotExists();
    const rowTables = ledgerTables(connection, 'benchRttRows');
    await createLedgerTables(rowTables);

    const setRoundTrips = (p: RttProfile) =>
      Promise.all([
        imap.setRoundTrip(p.imapMs),
        smtp.setRoundTrip(p.imapMs),
        ...storageProxies.map((s) => s.setRoundTrip(p.storageMs)),
      ]);
    const storageRoundTrips = async () =>
      (await Promise.all(storageProxies.map((p) => p.counts()))).reduce((n, c) => n + c.roundTrips, 0);
    const resetCounts = () => Promise.all([imap, smtp, ...storageProxies].map((p) => p.counts(true)));

    // Warm: the session, tables, queue and container, the token, through the proxies.
    await setRoundTrips({ name: 'warm', imapMs: 0, storageMs: 0 });
    await stack.dropIntoMaildir(mailbox, [benchMail(0, mailbox)]);
    await drainMailbox({ ...rt, log: silentLogger });
    const client = await stack.imap(bare, { accessToken: token, port: imap.port });
    const rowsClient = await stack.imap(withRows, { accessToken: token, port: imap.port });
    // The pooled client connects for each round and closes after it: Exchange counts both sides'
    // connections against the mailbox's 3, so one left open would refuse inboxq's (432).
    const pooledClient = () =>
      nodemailer.createTransport({
        pool: true,
        maxConnections: 3,
        maxMessages: Infinity,
        host: '127.0.0.1',
        port: smtp.port,
        secure: false,
        requireTLS: true,
        tls: { ca: stack.certs.ca },
        auth: { type: 'OAuth2', user: mailbox, accessToken: token },
      });

    const results: RttProfileResult[] = [];
    try {
      for (const profile of RTT_PROFILES) {
        await setRoundTrips(profile);
        // Tasks to answer: drained once, outside the measurement.
        const answerable: string[] = [];
        const drainRatios: number[] = [];
        const rowsRatios: number[] = [];
        const followUpRatios: number[] = [];
        const drainRates = {
          inboxq: [] as number[],
          pipelined: [] as number[],
          rows: [] as number[],
          followUps: [] as number[],
        };
        const trips = {
          imap: [] as number[],
          storage: [] as number[],
          rowsStorage: [] as number[],
          followUpsStorage: [] as number[],
        };
        for (let round = -1; round < options.rounds; round++) {
          // The same-rows client between the two, so each of the others goes first in turn; the
          // follow-ups right after the mails they answer.
          const sides =
            round % 2 === 0
              ? (['pipelined', 'rows', 'inboxq', 'follow-ups'] as const)
              : (['inboxq', 'follow-ups', 'rows', 'pipelined'] as const);
          const rate: Record<string, number> = {};
          /** The Message-IDs of the mails inboxq drained last, which its follow-ups answer. */
          let answered: string[] = [];
          for (const side of sides) {
            const target = side === 'inboxq' || side === 'follow-ups' ? mailbox : side === 'rows' ? withRows : bare;
            const mails = Array.from({ length: options.mails }, (_, i) =>
              benchMail(i, target, 0, side === 'follow-ups' ? answered[i] : undefined),
            );
            if (side === 'inboxq')
              answered = mails.map((m) => /^Message-ID: (.*)$/m.exec(m.toString('latin1'))![1]!.trim());
            await stack.dropIntoMaildir(target, mails);
            await tasks.clearMessages();
            await resetCounts();
            const started = performance.now();
            const cpu = process.cpuUsage();
            // BENCH_RTT_STEPS=1: when each step was first and last reached, in ms from the start.
            const steps = new Map<string, [number, number]>();
            const onStep = process.env['BENCH_RTT_STEPS']
              ? (step: string) => {
                  const t = performance.now() - started;
                  const seen = steps.get(step);
                  steps.set(step, seen ? [seen[0], t] : [t, t]);
                }
              : undefined;
            if (side === 'inboxq' || side === 'follow-ups') {
              let drained = 0;
              for (let run = 0; run < 5 && drained < options.mails; run++) {
                const summary = await drainMailbox({ ...rt, log: silentLogger, ...(onStep ? { onStep } : {}) });
                drained += summary.counts.queued;
                for (const o of summary.outcomes) if (o.outcome === 'queued' && o.taskId) answerable.push(o.taskId);
                if (summary.stoppedBecause === 'empty') break;
              }
              if (drained !== options.mails) throw new Error(`inboxq drained ${drained} of ${options.mails} (${side})`);
            } else if (side === 'rows') {
              await rowsClient.mailboxOpen('INBOX');
              const n = await bareDrainWithRows(rowsClient, withRows, tasks, rowTables, 16);
              if (n !== options.mails) throw new Error(`the same-rows client drained ${n} of ${options.mails}`);
            } else {
              await client.mailboxOpen('INBOX');
              const limit = pLimit(16);
              const sends: Promise<unknown>[] = [];
              for await (const m of client.fetch('1:*', { uid: true, source: true }))
                sends.push(
                  limit(() => tasks.sendMessage(encodeQueueMessage({ uid: m.uid, size: m.source?.length ?? 0 }))),
                );
              await Promise.all(sends);
              if (sends.length !== options.mails)
                throw new Error(`the client drained ${sends.length} of ${options.mails}`);
              await client.messageDelete('1:*');
            }
            rate[side] = options.mails / ((performance.now() - started) / 1000);
            if (onStep) {
              const used = process.cpuUsage(cpu);
              const timeline = [...steps].map(
                ([step, [first, last]]) => `${step} ${first.toFixed(0)}-${last.toFixed(0)}`,
              );
              log(
                `    ${side}: ${(performance.now() - started).toFixed(0)} ms, CPU ${((used.user + used.system) / 1000).toFixed(0)} ms${timeline.length ? `; ${timeline.join(', ')}` : ''}`,
              );
            }
            if (side === 'inboxq' && round >= 0) {
              trips.imap.push((await imap.counts()).roundTrips);
              trips.storage.push(await storageRoundTrips());
            }
            if (side === 'rows' && round >= 0) trips.rowsStorage.push(await storageRoundTrips());
            if (side === 'follow-ups' && round >= 0) trips.followUpsStorage.push(await storageRoundTrips());
          }
          if (round < 0) continue;
          drainRates.inboxq.push(rate['inboxq']!);
          drainRates.pipelined.push(rate['pipelined']!);
          drainRatios.push(rate['inboxq']! / rate['pipelined']!);
          drainRates.rows.push(rate['rows']!);
          rowsRatios.push(rate['inboxq']! / rate['rows']!);
          drainRates.followUps.push(rate['follow-ups']!);
          followUpRatios.push(rate['follow-ups']! / rate['pipelined']!);
          log(
            `  rtt ${profile.imapMs}/${profile.storageMs} ms drain ${round + 1}: inboxq ${rate['inboxq']!.toFixed(1)}/s, pipelined ${rate['pipelined']!.toFixed(1)}/s, ratio ${(rate['inboxq']! / rate['pipelined']!).toFixed(2)}; with the same rows ${rate['rows']!.toFixed(1)}/s, ratio ${(rate['inboxq']! / rate['rows']!).toFixed(2)}; follow-ups ${rate['follow-ups']!.toFixed(1)}/s, ratio ${(rate['follow-ups']! / rate['pipelined']!).toFixed(2)}; round trips IMAP ${trips.imap.at(-1)}, Storage ${trips.storage.at(-1)} (same rows: Storage ${trips.rowsStorage.at(-1)}, follow-ups: Storage ${trips.followUpsStorage.at(-1)})`,
          );
        }

        const replyRatios: number[] = [];
        const replyRates = { inboxq: [] as number[], pooled: [] as number[] };
        const replyTrips = { smtp: [] as number[], storage: [] as number[] };
        const replyConnections: number[] = [];
        const pooledConnections: number[] = [];
        const rows = await Promise.all(answerable.map((id) => rt.ledger.getMessage(mailbox, id)));
        for (let round = 0; round < options.rounds; round++) {
          const ids = answerable.slice(round * options.replies, (round + 1) * options.replies);
          if (ids.length < options.replies) throw new Error('not enough drained tasks to answer');
          const sides = round % 2 === 0 ? (['pooled', 'inboxq'] as const) : (['inboxq', 'pooled'] as const);
          const rate: Record<string, number> = {};
          for (const side of sides) {
            if (side === 'inboxq') {
              await repliesDirect.clearMessages();
              for (const taskId of ids)
                await repliesDirect.sendMessage(
                  encodeQueueMessage({
                    type: 'inboxq.reply',
                    version: 1,
                    taskId,
                    mailbox,
                    text: `Answer to ${taskId}`,
                  }),
                );
              await resetCounts();
              const started = performance.now();
              const run = await runQueueTrigger({
                queue: replies,
                poisonQueue: new QueueClient(connection, `${REPLIES_QUEUE}-poison`),
                functionName: 'reply',
                handler: (m, c) => handlers.reply(m, c),
              });
              if (run.succeeded !== ids.length)
                throw new Error(
                  `inboxq handled ${run.succeeded} messages for ${ids.length} replies (${run.failed} failed): ${run.logs.slice(0, 5).join(' | ')}`,
                );
              rate[side] = ids.length / ((performance.now() - started) / 1000);
              const smtpCounts = await smtp.counts();
              replyTrips.smtp.push(smtpCounts.roundTrips / ids.length);
              replyConnections.push(smtpCounts.connections);
              replyTrips.storage.push((await storageRoundTrips()) / ids.length);
            } else {
              const mine = rows.filter((r) => r && ids.includes(r.taskId));
              // inboxq's own pool (kept 10 s after its last reply) closed first: its connections count too.
              await closeSmtpPools();
              await resetCounts();
              const transport = pooledClient();
              const started = performance.now();
              await Promise.all(
                mine.map((row) =>
                  transport.sendMail(
                    composeReply(
                      row!,
                      {
                        type: 'inboxq.reply',
                        version: 1,
                        taskId: row!.taskId,
                        mailbox,
                        replyId: `pooled-${round}`,
                        text: `Answer to ${row!.taskId}`,
                        attachments: [],
                      },
                      [],
                    ),
                  ),
                ),
              );
              rate[side] = mine.length / ((performance.now() - started) / 1000);
              pooledConnections.push((await smtp.counts()).connections);
              transport.close();
            }
          }
          replyRates.inboxq.push(rate['inboxq']!);
          replyRates.pooled.push(rate['pooled']!);
          replyRatios.push(rate['inboxq']! / rate['pooled']!);
          log(
            `  rtt ${profile.imapMs}/${profile.storageMs} ms replies ${round + 1}: inboxq ${rate['inboxq']!.toFixed(1)}/s, pooled ${rate['pooled']!.toFixed(1)}/s, ratio ${(rate['inboxq']! / rate['pooled']!).toFixed(2)}; SMTP connections ${replyConnections.at(-1)} (pooled ${pooledConnections.at(-1)}), per reply SMTP ${replyTrips.smtp.at(-1)!.toFixed(1)}, Storage ${replyTrips.storage.at(-1)!.toFixed(1)} round trips`,
          );
        }
        results.push({
          profile,
          drain: {
            inboxq: median(drainRates.inboxq),
            pipelined: median(drainRates.pipelined),
            ratio: median(drainRatios),
            rows: median(drainRates.rows),
            rowsRatio: median(rowsRatios),
            imapRoundTrips: median(trips.imap),
            storageRoundTrips: median(trips.storage),
            rowsStorageRoundTrips: median(trips.rowsStorage),
            followUps: median(drainRates.followUps),
            followUpsRatio: median(followUpRatios),
            followUpsStorageRoundTrips: median(trips.followUpsStorage),
          },
          replies: {
            inboxq: median(replyRates.inboxq),
            pooled: median(replyRates.pooled),
            ratio: median(replyRatios),
            smtpRoundTripsPerReply: median(replyTrips.smtp),
            storageRoundTripsPerReply: median(replyTrips.storage),
          },
        });
      }
    } finally {
      await client.logout().catch(() => undefined);
      await rowsClient.logout().catch(() => undefined);
      await rt.imapSession.close();
    }
    return results;
  } finally {
    await Promise.all([imap, smtp, ...storageProxies].map((p) => p.stop()));
  }
}

/** The JSON keys of the round-trip figures in `npm run bench`'s last line. */
export function rttKeys(results: RttProfileResult[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const r of results) {
    out[`rttDrainRatio${r.profile.name}`] = Number(r.drain.ratio.toFixed(3));
    out[`rttDrainRowsRatio${r.profile.name}`] = Number(r.drain.rowsRatio.toFixed(3));
    out[`rttFollowUpDrainRatio${r.profile.name}`] = Number(r.drain.followUpsRatio.toFixed(3));
    out[`rttReplyRatio${r.profile.name}`] = Number(r.replies.ratio.toFixed(3));
  }
  return out;
}

/** docs/benchmarks.md's section on round trips. */
export function rttSection(
  results: RttProfileResult[],
  options: { mails: number; replies: number; rounds: number },
): string {
  const goal = (ok: boolean) => (ok ? 'met' : '**missed**');
  const rows = results.flatMap((r) => {
    const p = `${r.profile.imapMs} / ${r.profile.storageMs} ms`;
    return [
      `| drain, ${options.mails} small mails, ${p} (mails/s) | ${r.drain.inboxq.toFixed(1)} | ${r.drain.pipelined.toFixed(1)} | **${r.drain.ratio.toFixed(3)}** (\`rttDrainRatio${r.profile.name}\`) | ≥ 0.8 | ${goal(r.drain.ratio >= 0.8)} | IMAP ${r.drain.imapRoundTrips}, Storage ${r.drain.storageRoundTrips} per ${options.mails} mails |`,
      `| drain, the same, against the pipelined client writing the same ledger rows (mails/s) | ${r.drain.inboxq.toFixed(1)} | ${r.drain.rows.toFixed(1)} | ${r.drain.rowsRatio.toFixed(3)} (\`rttDrainRowsRatio${r.profile.name}\`) | none | | Storage ${r.drain.rowsStorageRoundTrips} (the client's) per ${options.mails} mails |`,
      `| drain, ${options.mails} follow-ups of the mails inboxq drained (each continues its conversation), against the pipelined client (mails/s) | ${r.drain.followUps.toFixed(1)} | ${r.drain.pipelined.toFixed(1)} | ${r.drain.followUpsRatio.toFixed(3)} (\`rttFollowUpDrainRatio${r.profile.name}\`) | none | | Storage ${r.drain.followUpsStorageRoundTrips} per ${options.mails} mails |`,
      `| replies, ${options.replies} at once, ${p} (replies/s) | ${r.replies.inboxq.toFixed(1)} | ${r.replies.pooled.toFixed(1)} | **${r.replies.ratio.toFixed(3)}** (\`rttReplyRatio${r.profile.name}\`) | ≥ 0.8 | ${goal(r.replies.ratio >= 0.8)} | SMTP ${r.replies.smtpRoundTripsPerReply.toFixed(1)}, Storage ${r.replies.storageRoundTripsPerReply.toFixed(1)} per reply |`,
    ];
  });
  return `## Round trips: peers tens of milliseconds away

scripts/bench-rtt.ts (\`BENCH_ONLY=rtt npm run bench\`) puts a delay proxy (localstack/delay-proxy.ts,
each in a process of its own) in front of Dovecot, the SMTP server and each Azurite service, adding a round trip to every exchange:
20 ms to Exchange and 4 ms to Storage (same region), then 80 ms and 10 ms (a mailbox in another
geography). Baselines: **drain**, a pipelined client: one IMAP FETCH of every source, 16 queue sends
in flight, then delete, on a connection opened before it is timed (inboxq uses its kept session,
and deletes too: its default, a MOVE to inboxq-processed, is one IMAP command fewer);
**replies**, nodemailer pooled with 3 connections (what Exchange allows a mailbox), every reply
given at once. **The drain against the same rows** (no goal): the pipelined client also writing
the rows inboxq's guarantees rest on, in the same transactions (scripts/bench-rows.ts: the claims,
the conversations, the records after the sends, the removal marks after the delete; not the lease
or the run record), so what is left between the two is inboxq's own. **Follow-ups** (no goal): inboxq
draining as many mails, each answering (In-Reply-To, from its sender) one it drained just before,
so each continues a conversation: what a mailbox whose senders answer adds (the lookup of each
mail's thread). inboxq's replies go through the reply function as the queue runner calls it (batches
of 8, host.json) with the pace off. Median of ${options.rounds} rounds per profile, after a warm-up round;
round trips are those inboxq started, counted at the proxies (a burst of pipelined commands is one).

| measure | inboxq | baseline | ratio | goal | | round trips |
|---|---|---|---|---|---|---|
${rows.join('\n')}
`;
}
