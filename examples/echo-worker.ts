/**
 * A sample worker: takes each task from the `tasks` queue, "does the work" (here: describes what it
 * received), and answers on the `replies` queue. inboxq's reply function sends the answer, threaded
 * on the original mail.
 *
 *   AzureWebJobsStorage=<connection string> node dist/examples/echo-worker.js [--once]
 *
 * Replace `work` with your own processing; everything else stays.
 */
import { TaskWorker } from '../shared/worker/worker';
import type { TaskMessage } from '../shared/contract/messages';

export async function work(worker: TaskWorker, task: TaskMessage): Promise<string> {
  const body = await worker.bodyText(task);
  const words = body.split(/\s+/).filter(Boolean).length;
  const files = task.attachments.map((a) => `- ${a.filename} (${a.contentType}, ${a.size} bytes, sha256 ${a.sha256.slice(0, 12)}…)`);
  return [
    `Hello${task.from.name ? ` ${task.from.name}` : ''},`,
    '',
    `your message "${task.subject}" became task ${task.taskId}.`,
    `Its text has ${words} word${words === 1 ? '' : 's'}${files.length ? ` and ${files.length} attachment${files.length === 1 ? '' : 's'}:` : '.'}`,
    ...files,
    '',
    '(Answered by the inboxq sample worker.)',
  ].join('\n');
}

/** Handles what is on the queue now; returns how many tasks were answered. */
export async function runOnce(worker: TaskWorker, log: (line: string) => void = console.log): Promise<number> {
  let answered = 0;
  for (;;) {
    const batch = await worker.receive({ max: 16, onInvalid: (err) => log(`skipping an invalid task message: ${err.message}`) });
    if (batch.length === 0) return answered;
    for (const { task, complete } of batch) {
      const text = await work(worker, task);
      await worker.reply({ taskId: task.taskId, mailbox: task.mailbox, text });
      await complete();
      answered++;
      log(`answered task ${task.taskId} from ${task.from.address}`);
    }
  }
}

async function main(): Promise<void> {
  const connection = process.env['AzureWebJobsStorage'];
  if (!connection) {
    console.error('Set AzureWebJobsStorage to the storage connection string (UseDevelopmentStorage=true for Azurite).');
    process.exit(2);
  }
  const worker = TaskWorker.fromConnectionString(connection);
  const once = process.argv.includes('--once');
  do {
    await runOnce(worker);
    if (!once) await new Promise((r) => setTimeout(r, 5000));
  } while (!once);
}

if (require.main === module) {
  main().catch((err: Error) => {
    console.error(`echo-worker failed: ${err.message}`);
    process.exit(1);
  });
}
