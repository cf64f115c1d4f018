/**
 * Separates what the sender wrote in this mail from the history quoted below it ("On ... wrote:",
 * Outlook's "From: ... Sent: ..." block, "> " lines), with Crisp's email-reply-parser (a maintained
 * port of GitHub's EmailReplyParser, with the reply headers of many languages and clients).
 *
 * The library's patterns backtrack (`.+\s.+`, `[\s\S]+?` across lines): without the native RE2
 * module, which can't be built here, 40 KB of "On a a a ..." take a second and 300 KB of crafted
 * lines minutes. So the library only ever sees a bounded probe: the first PROBE_CHARS of the text,
 * with every line longer than PROBE_LINE_CHARS replaced by a short marker (a quote header is never
 * that long) and put back afterwards. Where the probe holds the first quote, everything after the
 * probe is quoted history too; where it holds none, the whole text is new. Every step outside the
 * library is a linear scan.
 */
import EmailReplyParser from 'email-reply-parser';

/** Characters of the text's start that the parser looks at. */
export const PROBE_CHARS = 4096;
/** Lines longer than this are never a reply header: the parser sees a marker in their place. */
export const PROBE_LINE_CHARS = 200;

export interface SplitBody {
  /** What the sender wrote, signature included; the whole text when nothing is quoted. */
  newText: string;
  /** The quoted history, as it appears in the mail; "" when there is none. */
  quotedText: string;
}

const OUTLOOK_FROM = ['From', 'Von', 'De', 'Da', 'Van'];
const OUTLOOK_SENT = ['Sent', 'Gesendet', 'Envoyé', 'Enviado', 'Inviato', 'Verzonden'];

/** `label` + optional space + `:` at the start of the line: the rest of the line, or null. Linear. */
function afterLabel(line: string, labels: string[]): string | null {
  for (const label of labels) {
    if (!line.startsWith(label)) continue;
    let i = label.length;
    if (line[i] === ' ') i++;
    if (line[i] === ':') return line.slice(i + 1);
  }
  return null;
}

/**
 * Outlook's header block above a quoted mail when the sender has no display name ("From:
 * agent@company.com", then "Sent:"), which email-reply-parser only knows with an address in <>:
 * the bare address of such a "From:" line, or null.
 */
export function outlookBareAddress(line: string, next: string | undefined): string | null {
  const rest = afterLabel(line, OUTLOOK_FROM);
  if (rest === null || next === undefined) return null;
  const sent = afterLabel(next, OUTLOOK_SENT);
  if (sent === null || !sent.startsWith(' ')) return null;
  const address = rest.trim();
  const at = address.indexOf('@');
  if (at <= 0 || at === address.length - 1 || /[\s<>]/.test(address)) return null;
  return address;
}

const MARK_OPEN = '\uE000';
const MARK_CLOSE = '\uE001';

/**
 * Whether the text has a character trim() keeps, looking no further than the first one: trim() or
 * a regular expression copies a long text first (0.7 ms a megabyte).
 */
function hasContent(text: string): boolean {
  for (let i = 0; i < text.length; i++) if (text[i]!.trim() !== '') return true;
  return false;
}

export function splitQuoted(text: string): SplitBody {
  // Text that holds the markers' own private-use characters is not split (their meaning would be unclear).
  if (!hasContent(text) || text.includes(MARK_OPEN)) return { newText: text, quotedText: '' };
  // Only the probe's part of the text is normalized up front: a long text is copied again only
  // when a quote is found (its remainder is then quoted history). CRLF -> LF at most halves the
  // length, so the first 2 x PROBE_CHARS + 2 characters hold the normalized probe and one more.
  const whole = text.length <= 2 * PROBE_CHARS + 2;
  const normalized = (whole ? text : text.slice(0, 2 * PROBE_CHARS + 2)).replace(/\r\n/g, '\n');
  const probeEnd =
    whole && normalized.length <= PROBE_CHARS ? normalized.length : normalized.lastIndexOf('\n', PROBE_CHARS) + 1;
  if (probeEnd <= 0) return { newText: text, quotedText: '' };
  const rest = () => (whole ? normalized : text.replace(/\r\n/g, '\n')).slice(probeEnd);

  // The probe: long lines become markers; a bare-address Outlook header gets the angle brackets
  // the parser looks for (and loses them again in the quoted text, which stays as the mail had it).
  const long: string[] = [];
  let bracketed: { shown: string; original: string } | undefined;
  const lines = normalized.slice(0, probeEnd).split('\n');
  const probe = lines.map((line, i) => {
    if (line.length > PROBE_LINE_CHARS) {
      long.push(line);
      return `${MARK_OPEN}${long.length - 1}${MARK_CLOSE}`;
    }
    const address = bracketed ? null : outlookBareAddress(line, lines[i + 1]);
    if (!address) return line;
    const shown = line.replace(address, `${address} <${address}>`);
    bracketed = { shown, original: line };
    return shown;
  });
  const restore = (s: string) => {
    let out = long.length === 0 ? s : s.replace(/\uE000(\d+)\uE001/g, (_m, n: string) => long[Number(n)] ?? '');
    if (bracketed) out = out.replace(bracketed.shown, bracketed.original);
    return out;
  };

  const fragments = new EmailReplyParser().read(probe.join('\n')).getFragments();
  // A fragment is quoted history once the parser sees a reply header or "> " lines; everything
  // from the first such fragment on is history (a signature above it stays with the new text).
  const first = fragments.findIndex((f) => f.isQuoted());
  if (first < 0) return { newText: text, quotedText: '' };
  const newText = fragments
    .slice(0, first)
    .map((f) => f.getContent())
    .join('\n')
    .trimEnd();
  // Nothing above the quote: an inline answer or a forward with no words; keep it all as new text.
  if (!newText.trim()) return { newText: text, quotedText: '' };
  const quoted = fragments
    .slice(first)
    .map((f) => f.getContent())
    .filter((c) => c.trim())
    .join('\n')
    .trim();
  const after = rest();
  return { newText: `${restore(newText)}\n`, quotedText: `${restore(quoted)}${after ? `\n${after.trimEnd()}` : ''}` };
}
