/**
 * Step 2, judge: the verdict from the header section alone (the body of a mail is never parsed
 * before its sender is accepted), and the identity the mail is claimed under: the Message-ID only
 * for an accepted mail, so a rejected one can never take a genuine mail's task id.
 */
import type { SenderPolicy } from '../../config/types';
import { mailIdentity } from '../../identity/ids';
import type { TaskIds } from '../../identity/task-key';
import { judgeMail } from '../../sender/judge';
import type { JudgedMail, ReadMail } from '../mail';

/** A header section larger than this is not judged: the mail is set aside as malformed. */
export const MAX_HEADER_BYTES = 1024 * 1024;

export function judgeOne(mail: ReadMail, taskIds: TaskIds, policy: SenderPolicy): JudgedMail {
  const judged =
    mail.header.length > MAX_HEADER_BYTES
      ? ({
          kind: 'malformed',
          reason: `the header section is ${mail.header.length} bytes, over the ${MAX_HEADER_BYTES} bytes a mail may have`,
        } as const)
      : judgeMail(mail.header, policy, mail.entry.size);
  const accepted = judged.kind === 'mail' && judged.verdict.verdict === 'accept';
  const identity = mailIdentity(accepted, judged.kind === 'mail' ? judged.parsed.messageId : null, mail.headerSha256);
  return { ...mail, judged, accepted, identity, taskId: taskIds.of(identity) };
}
