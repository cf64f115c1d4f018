/**
 * Every identity inboxq derives or reads back, in one place: a task id, the identity a mail is
 * claimed under, a conversation id and its subject tag, inboxq's own Message-IDs. Threading works
 * only while writing and reading these agree, so both directions live here.
 *
 *   task id          32 hex = HMAC-SHA256(key, "inboxq-task\0" mailbox "\0" identity), under the
 *                    deployment's key (task-key.ts), so no one without it can compute the task id
 *                    of a mail; before the key existed, sha256 of the same text (rows of then)
 *   identity         `mid:<Message-ID>` for an accepted mail that has one, else `sha256:<header hash>`
 *                    (a rejected or set-aside mail never takes the Message-ID identity, so a forged
 *                    mail can't squat the task id of a genuine mail that arrives later)
 *   conversation id  24 hex (96 bits) from the task id of its first mail; on a collision with
 *                    another conversation, the next candidate of a fixed chain (never an overwrite)
 *   subject tag      `[#<conversation id>]`
 *   own Message-ID   `<inboxq.<task id>.<reply id>@<mailbox domain>>`
 */
import { createHash, createHmac } from 'node:crypto';

/**
 * Deterministic task id: the same mail (same Message-ID, or same header section without one)
 * always gets the same id under the same key. `key` null: the id of before the key (task-key.ts).
 */
export function deriveTaskId(key: Buffer | null, mailbox: string, identity: string): string {
  const text = `inboxq-task\0${mailbox.toLowerCase()}\0${identity}`;
  return (key ? createHmac('sha256', key) : createHash('sha256')).update(text).digest('hex').slice(0, 32);
}

/**
 * The identity a mail is claimed under. Only an accepted mail with a Message-ID uses it: anyone can
 * write any Message-ID, and the first claim of an identity wins.
 */
export function mailIdentity(accepted: boolean, messageId: string | null, headerSha256: string): string {
  return accepted && messageId ? `mid:${messageId}` : `sha256:${headerSha256}`;
}

/** Hex digits of a conversation id: 96 bits, beyond a birthday search for a chosen mailbox. */
export const CONVERSATION_ID_HEX = 24;
/** Candidates tried for a new conversation's id before giving up (each a 96-bit value). */
export const CONVERSATION_ID_CANDIDATES = 4;

/**
 * The id a conversation started by `taskId` gets: candidate 0 normally, the next one when the id is
 * already another conversation's. The chain is fixed, so a resumed drain finds the one it took.
 */
export function conversationIdFor(taskId: string, candidate = 0): string {
  if (candidate === 0) return taskId.slice(0, CONVERSATION_ID_HEX);
  return createHash('sha256')
    .update(`inboxq-conversation\0${taskId}\0${candidate}`)
    .digest('hex')
    .slice(0, CONVERSATION_ID_HEX);
}

/** True when `conversationId` is one a mail with `taskId` could have started. */
export function startedBy(conversationId: string, taskId: string): boolean {
  for (let c = 0; c < CONVERSATION_ID_CANDIDATES; c++) if (conversationIdFor(taskId, c) === conversationId) return true;
  return false;
}

export function subjectTag(conversationId: string): string {
  return `[#${conversationId}]`;
}

const TAG = /\[#([0-9a-f]{24})\]/gi;

/** Conversation ids tagged in a subject, in order (linear: a fixed-width pattern). */
export function subjectTags(subject: string): string[] {
  return [...subject.matchAll(TAG)].map((m) => m[1]!.toLowerCase());
}

/** The subject with the conversation's tag at its end, and no other conversation's tag. */
export function withSubjectTag(subject: string, conversationId: string): string {
  const others = subject.replace(/\s*\[#([0-9a-f]{24})\]/gi, (tag, id: string) =>
    id.toLowerCase() === conversationId ? tag : '',
  );
  return subjectTags(others).includes(conversationId)
    ? others.trim()
    : `${others} ${subjectTag(conversationId)}`.trim();
}

/** inboxq's own Message-ID for a reply: deterministic, so a resent reply is recognisable (Sent Items, the recipient's client). */
export function replyMessageId(mailbox: string, taskId: string, replyId: string): string {
  const domain = mailbox.slice(mailbox.lastIndexOf('@') + 1);
  return `<inboxq.${taskId}.${replyId}@${domain}>`;
}

/** The task id inside one of inboxq's own Message-IDs, or null for anyone else's. */
export function taskIdOfOwnMessageId(messageId: string): string | null {
  const own = /^<inboxq\.([0-9a-f]{32})\.[A-Za-z0-9._-]{1,100}@[^>\s]{1,255}>$/.exec(messageId.trim());
  return own ? own[1]! : null;
}
