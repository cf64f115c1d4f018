/**
 * The README's first command runs this demo: it must keep working. It runs the compiled demo as a
 * user would (its own local stack and the app on the local host, both stopped at the end) and
 * checks what it says it showed.
 */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';

import { describe, expect, it } from 'vitest';

describe('the demo', () => {
  it('drains the seeded inbox, acknowledges, answers, and answers the follow-up in the same conversation', async () => {
    const { stdout } = await promisify(execFile)(process.execPath, [path.resolve('build/scripts/demo.js')], {
      timeout: 120_000,
      env: { ...process.env, NO_COLOR: '1' },
    });
    expect(stdout).toMatch(/UID 1: queued as task [0-9a-f]{32}/);
    expect(stdout).toMatch(/UID 2: rejected .* DMARC result for contoso\.test is fail/);
    expect(stdout).toContain('2 mail(s) sent over SMTP with XOAUTH2');
    // The app ran on the local host: its functions registered with their triggers.
    expect(stdout).toContain('[host] drainSchedule: timerTrigger');
    expect(stdout).toContain('[host] reply: queueTrigger (replies)');
    expect(stdout).toMatch(/\[host\] \d+ invocations, every one on its own timer or queue message/);
    expect(stdout).toContain('Parts:       text/plain + text/html, received-files.csv');
    expect(stdout).toMatch(/continued by in-reply-to/);
    expect(stdout).toContain(
      'Done. 1 mail became a task, was acknowledged and answered, threaded; its follow-up joined the conversation and was answered too; the forged mail was recorded as rejected and got 0 replies.',
    );
  }, 150_000);
});
