/**
 * Separates what the sender wrote in this mail from the history quoted below it ("On ... wrote:",
 * Outlook's "From: ... Sent: ..." block, "> " lines), with Crisp's email-reply-parser (a maintained
 * port of GitHub's EmailReplyParser, with the reply headers of many languages and clients).
 */
import EmailReplyParser from 'email-reply-parser';

/** Bodies longer than this are not split (the parser's patterns run over the whole text): all of it counts as new. */
export const MAX_SPLIT_CHARS = 512 * 1024;

export interface SplitBody {
  /** What the sender wrote, signature included; the whole text when nothing is quoted. */
  newText: string;
  /** The quoted history, as it appears in the mail; "" when there is none. */
  quotedText: string;
}

/**
 * Outlook's header block above a quoted mail when the sender has no display name ("From:
 * agent@company.com", then "Sent:"), which email-reply-parser only knows with an address in <>.
 */
const OUTLOOK_BARE_HEADER = /^(From|Von|De|Da|Van)\s?: *[^\s<>]+@[^\s<>]+ *\n(Sent|Gesendet|Envoyé|Enviado|Inviato|Verzonden)\s?: .+$/m;

export function splitQuoted(text: string): SplitBody {
  if (!text.trim() || text.length > MAX_SPLIT_CHARS) return { newText: text, quotedText: '' };
  let normalized = text.replace(/\r\n/g, '\n');
  // Give a bare address the angle brackets the parser looks for, so it sees the header block
  // (and take them away again in the quoted text, which stays as the mail had it).
  let bracketed: string | undefined;
  normalized = normalized.replace(OUTLOOK_BARE_HEADER, (block) =>
    block.replace(/^(\S+\s?: *)([^\s<>]+@[^\s<>]+)/, (_m, label: string, address: string) => {
      bracketed = `${address} <${address}>`;
      return `${label}${bracketed}`;
    }),
  );
  const email = new EmailReplyParser().read(normalized);
  const fragments = email.getFragments();
  // A fragment is quoted history once the parser sees a reply header or "> " lines; everything
  // from the first such fragment on is history (a signature above it stays with the new text).
  const first = fragments.findIndex((f) => f.isQuoted());
  if (first < 0) return { newText: text, quotedText: '' };
  const newText = fragments
    .slice(0, first)
    .map((f) => f.getContent())
    .join('\n')
    .trimEnd();
  let quotedText = fragments
    .slice(first)
    .map((f) => f.getContent())
    .filter((c) => c.trim())
    .join('\n')
    .trim();
  if (bracketed) quotedText = quotedText.replace(bracketed, bracketed.slice(0, bracketed.indexOf(' <')));
  // Nothing above the quote: an inline answer or a forward with no words; keep it all as new text.
  if (!newText.trim()) return { newText: text, quotedText: '' };
  return { newText: `${newText}\n`, quotedText };
}
