/**
 * The whole judgement of one raw mail, as the drain makes it and `inboxq check-sender` explains it:
 * is it a mail at all, and may its sender give work?
 */
import type { SenderPolicy } from '../config/types';
import { headerSection, type ParsedHeader, parseHeader, structuralProblem } from '../mail/parse';
import { evaluateSender, type SenderVerdict } from './policy';

export type Judgement =
  { kind: 'malformed'; reason: string } | { kind: 'mail'; parsed: ParsedHeader; verdict: SenderVerdict };

/**
 * `source` is the whole message, or only its header section (then `totalSize` is the message's
 * size). Only the header section is read: a stranger's body is never parsed before the verdict.
 */
export function judgeMail(source: Buffer, policy: SenderPolicy, totalSize = source.length): Judgement {
  const header = headerSection(source);
  const problem = structuralProblem(header, totalSize);
  if (problem) return { kind: 'malformed', reason: problem };
  let parsed: ParsedHeader;
  try {
    parsed = parseHeader(header);
  } catch (err) {
    return {
      kind: 'malformed',
      reason: `the parser failed: ${err instanceof Error ? err.message.slice(0, 200) : 'unknown error'}`,
    };
  }
  return { kind: 'mail', parsed, verdict: evaluateSender(parsed.headerLines, policy) };
}
