/**
 * A sample worker: takes each task from a tasks queue, "does the work" (here: describes what it
 * received, in Markdown, with a CSV of the attachments it got), and answers on its replies
 * queue. inboxq's reply function sends the answer as a mail with a text and an HTML part,
 * threaded on the original and tagged with its conversation.
 *
 *   AzureWebJobsStorage=<connection string> node build/examples/echo-worker.js [--mailbox <key>] [--once]
 *   npm run worker     (next to `npm run stack`: the connection comes from local.settings.json)
 *
 * --mailbox: none for a deployment of one mailbox (tasks, replies); the key of the mailbox it
 * serves with several (tasks-<key>, replies-<key>, inboxq-mail-<key>). --queue: another tasks queue
 * (the mailbox's INBOXQ_<KEY>__TASKS_QUEUE).
 * Replace `work` with your own processing; everything else stays. A worker in another language
 * does the same with its Storage SDK (docs/contract.md).
 */
import { existsSync, readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

import type { ReplyMessageInput, TaskMessage } from '../shared/contract/messages';
import { TaskWorker } from '../shared/worker/worker';

export interface Answer {
  markdown: string;
  attachments: NonNullable<ReplyMessageInput['attachments']>;
}

/** Markdown table cells can't hold | or line breaks. */
const cell = (s: string) => s.replace(/\|/g, '\\|').replace(/\s+/g, ' ');

export async function work(worker: TaskWorker, task: TaskMessage): Promise<Answer> {
  const said = (await worker.newText(task)).trim();
  const words = said.split(/\s+/).filter(Boolean).length;
  const quoted = (await worker.quotedText(task)).trim();
  const lines = [
    `Hello${task.from.name ? ` ${task.from.name}` : ''},`,
    '',
    task.conversation.isNew
      ? `your message **${cell(task.subject) || '(no subject)'}** became task \`${task.taskId}\`.`
      : `your message continues our conversation \`${task.conversation.id}\` (${task.conversation.previousTaskIds.length} earlier task${task.conversation.previousTaskIds.length === 1 ? '' : 's'}); it became task \`${task.taskId}\`.`,
    `You wrote ${words} new word${words === 1 ? '' : 's'}${quoted ? ', above the quoted history of the thread' : ''}.`,
  ];
  const attachments: Answer['attachments'] = [];
  if (task.attachments.length > 0) {
    lines.push('', '| File | Type | Size | SHA-256 |', '|:-----|:-----|-----:|:--------|');
    for (const a of task.attachments)
      lines.push(`| ${cell(a.filename)} | ${cell(a.contentType)} | ${a.size} | \`${a.sha256.slice(0, 12)}…\` |`);
    const csv = [
      'filename,content_type,size,sha256',
      ...task.attachments.map((a) => `"${a.filename.replace(/"/g, '""')}",${a.contentType},${a.size},${a.sha256}`),
    ].join('\r\n');
    attachments.push(
      await worker.putReplyAttachment(task, 'received-files.csv', Buffer.from(`${csv}\r\n`), 'text/csv'),
    );
    lines.push('', 'The list is attached as `received-files.csv`.');
  }
  lines.push('', '*Answered by the inboxq sample worker.*');
  return { markdown: lines.join('\n'), attachments };
}

/** Handles what is on the queue now; returns how many tasks were answered. */
export async function runOnce(worker: TaskWorker, log: (line: string) => void = console.log): Promise<number> {
  let answered = 0;
  for (;;) {
    const batch = await worker.receive({
      max: 16,
      onInvalid: (err) => log(`skipping an invalid task message: ${err.message}`),
    });
    if (batch.length === 0) return answered;
    for (const { task, complete } of batch) {
      const { markdown, attachments } = await work(worker, task);
      await worker.reply({ taskId: task.taskId, mailbox: task.mailbox, markdown, attachments });
      await complete();
      answered++;
      log(
        `answered task ${task.taskId} from ${task.from.address} (conversation ${task.conversation.id}${task.conversation.isNew ? ', new' : `, continued by ${task.conversation.continuedBy}`})`,
      );
    }
  }
}

/** AzureWebJobsStorage from a local.settings.json (`npm run stack` writes one), when the environment has none. */
function fromSettingsFile(file: string): string | undefined {
  if (!existsSync(file)) return undefined;
  const json = JSON.parse(readFileSync(file, 'utf8')) as { Values?: Record<string, string> };
  return json.Values?.['AzureWebJobsStorage'];
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      // With several mailboxes, the key of the one this worker serves: tasks-<key>, replies-<key>.
      mailbox: { type: 'string' },
      queue: { type: 'string' },
      once: { type: 'boolean', default: false },
      settings: { type: 'string', default: 'local.settings.json' },
    },
  });
  const connection = process.env['AzureWebJobsStorage'] ?? fromSettingsFile(values.settings);
  if (!connection) {
    console.error('Set AzureWebJobsStorage to the storage connection string (UseDevelopmentStorage=true for Azurite).');
    process.exit(2);
  }
  const worker = TaskWorker.fromConnectionString(connection, {
    ...(values.mailbox ? { mailboxKey: values.mailbox.toLowerCase() } : {}),
    ...(values.queue ? { tasksQueue: values.queue } : {}),
  });
  do {
    await runOnce(worker);
    if (!values.once) await new Promise((r) => setTimeout(r, 5000));
  } while (!values.once);
}

if (require.main === module) {
  main().catch((err: Error) => {
    console.error(`echo-worker failed: ${err.message}`);
    process.exit(1);
  });
}
