/**
 * A strict reader of the TAP the CLI prints, for tests: it rejects anything
 * that is not a version line, a plan, a test point, a YAML block under a test
 * point, or a comment, and checks numbering and the plan count.
 */

/** One parsed test point. */
export interface ParsedPoint {
  ok: boolean;
  number: number;
  description: string;
  skip: string | undefined;
  /** The TODO directive's text (a known kernel bug), if any. */
  todo: string | undefined;
  /** Bracketed notes at the end of the description ('engine: software'), split at '; '. */
  notes: string[];
  /** The YAML block's lines without the two-space indent, if any. */
  yaml: string[] | undefined;
}

/** The parsed document. */
export interface ParsedTap {
  version: number;
  plan: number;
  points: ParsedPoint[];
  comments: string[];
}

const POINT = /^(ok|not ok) (\d+)(?: - (.*))?$/;

function unescape(text: string): string {
  return text.replace(/\\([\\#])/g, '$1');
}

/** Splits "description # SKIP reason" (or # TODO) at the first unescaped '#'. */
function splitDirective(rest: string): { description: string; skip: string | undefined; todo: string | undefined } {
  for (let i = 0; i < rest.length; i++) {
    if (rest[i] === '\\') {
      i++;
      continue;
    }
    if (rest[i] === '#') {
      const directive = rest.slice(i + 1).trim();
      const m = /^(SKIP|TODO)\b\s*(.*)$/i.exec(directive);
      if (!m) throw new Error(`unknown directive: ${directive}`);
      const text = unescape(m[2]!);
      const description = unescape(rest.slice(0, i).trimEnd());
      return m[1]!.toUpperCase() === 'SKIP' ? { description, skip: text, todo: undefined } : { description, skip: undefined, todo: text };
    }
  }
  return { description: unescape(rest), skip: undefined, todo: undefined };
}

/** Parses and validates; throws an Error naming the first bad line. */
export function parseTap(text: string): ParsedTap {
  const lines = text.split('\n');
  if (lines.at(-1) === '') lines.pop();
  const version = /^TAP version (13|14)$/.exec(lines[0] ?? '');
  if (!version) throw new Error(`first line is not a TAP version line: ${JSON.stringify(lines[0])}`);
  let plan: number | undefined;
  const points: ParsedPoint[] = [];
  const comments: string[] = [];
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    const planMatch = /^1\.\.(\d+)(?: # .*)?$/.exec(line);
    if (planMatch) {
      if (plan !== undefined) throw new Error(`line ${i + 1}: second plan`);
      if (points.length) throw new Error(`line ${i + 1}: plan after test points`);
      plan = Number(planMatch[1]);
      continue;
    }
    if (line === '#' || line.startsWith('# ')) {
      comments.push(line.slice(2));
      continue;
    }
    const m = POINT.exec(line);
    if (!m) throw new Error(`line ${i + 1}: not TAP: ${JSON.stringify(line)}`);
    const number = Number(m[2]);
    if (number !== points.length + 1) throw new Error(`line ${i + 1}: test point ${number}, expected ${points.length + 1}`);
    const { description: full, skip, todo } = splitDirective(m[3] ?? '');
    const noted = /^(.*?) \[([^\]]*)\]$/.exec(full);
    const description = noted ? noted[1]! : full;
    const notes = noted ? noted[2]!.split('; ') : [];
    const point: ParsedPoint = { ok: m[1] === 'ok', number, description, skip, todo, notes, yaml: undefined };
    if (lines[i + 1] === '  ---') {
      const yaml: string[] = [];
      let j = i + 2;
      for (; j < lines.length && lines[j] !== '  ...'; j++) {
        if (lines[j] !== '' && !lines[j]!.startsWith('  ')) throw new Error(`line ${j + 1}: YAML line not indented`);
        yaml.push(lines[j]!.slice(2));
      }
      if (j === lines.length) throw new Error(`line ${i + 2}: YAML block not closed`);
      point.yaml = yaml;
      i = j;
    }
    points.push(point);
  }
  if (plan === undefined) throw new Error('no plan');
  if (plan !== points.length) throw new Error(`plan says ${plan} tests, found ${points.length}`);
  return { version: Number(version[1]), plan, points, comments };
}
