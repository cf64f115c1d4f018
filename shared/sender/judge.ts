/**
 * The whole judgement of one raw mail, as the drain makes it and `inboxq check-sender` explains it:
 * is it a mail at all, and may its sender give work?
 */
import type { SenderPolicy } from '../config/settings';
import { parseMail, structuralProblem, type ParsedMail } from '../mail/parse';
import { evaluateSender, type SenderVerdict } from './policy';

export type Judgement =
  | { kind: 'malformed'; reason: string }
  | { kind: 'mail'; parsed: ParsedMail; verdict: SenderVerdict };

/**
 * `source` is the whole message, or only its header section (the drain reads the header first;
 * `totalSize` is then the message's size): the verdict reads headers only, never the body.
 */
export async function judgeMail(source: Buffer, policy: SenderPolicy, totalSize = source.length): Promise<Judgement> {
  const problem = structuralProblem(source, totalSize);
  if (problem) return { kind: 'malformed', reason: problem };
  let parsed: ParsedMail;
  try {
    parsed = await parseMail(source);
  } catch (err) {
    return { kind: 'malformed', reason: `the parser failed: ${err instanceof Error ? err.message.slice(0, 200) : 'unknown error'}` };
  }
  return { kind: 'mail', parsed, verdict: evaluateSender(parsed.headerLines, policy) };
}
