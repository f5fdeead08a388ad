/**
 * A TAP producer (Test Anything Protocol, versions 13 and 14): version line,
 * plan, test points with `# SKIP` and `# TODO` directives, YAML diagnostic blocks, and
 * comments. Output is flat (no subtests) so TAP 13 consumers read it too.
 */

/** One test point. */
export interface TestPoint {
  ok: boolean;
  description: string;
  /** Makes the point a skip: `ok N - description # SKIP reason`. */
  skip?: string;
  /**
   * Makes the point a TODO: `not ok N - description # TODO reason` (with ok
   * false) counts as an expected failure that does not fail the run.
   */
  todo?: string;
  /** Diagnostics printed as a YAML block under the point. */
  diagnostics?: Record<string, unknown>;
}

/** Writes TAP lines through `write` (each call gets one line with its newline). */
export class TapWriter {
  #count = 0;
  readonly #write: (line: string) => void;

  constructor(write: (line: string) => void) {
    this.#write = write;
  }

  /** Number of test points written so far. */
  get count(): number {
    return this.#count;
  }

  /** `TAP version N`; must come first. */
  version(version: 13 | 14 = 14): void {
    this.#line(`TAP version ${version}`);
  }

  /** `1..N`; with N = 0 a reason may say why nothing ran. */
  plan(count: number, skipReason?: string): void {
    this.#line(`1..${count}${count === 0 && skipReason ? ` # SKIP ${oneLine(skipReason)}` : ''}`);
  }

  /** `# text`, one comment line per line of text. */
  comment(text: string): void {
    for (const line of text.split(/\r?\n/)) this.#line(line ? `# ${line}` : '#');
  }

  /** A test point, numbered in order. */
  testPoint(point: TestPoint): void {
    this.#count++;
    let line = `${point.ok ? 'ok' : 'not ok'} ${this.#count} - ${escapeDescription(point.description)}`;
    if (point.skip !== undefined) line += ` # SKIP ${escapeDirective(point.skip)}`;
    else if (point.todo !== undefined) line += ` # TODO ${escapeDirective(point.todo)}`;
    this.#line(line);
    if (point.diagnostics) {
      this.#line('  ---');
      for (const l of yamlLines(point.diagnostics, '  ')) this.#line(l);
      this.#line('  ...');
    }
  }

  /** `Bail out! reason`: the run cannot go on. */
  bailOut(reason: string): void {
    this.#line(`Bail out! ${oneLine(reason)}`);
  }

  #line(text: string): void {
    this.#write(`${text}\n`);
  }
}

function oneLine(text: string): string {
  return text.replace(/\s*\r?\n\s*/g, ' ').trim();
}

/** '#' would start a directive inside a description and '\' escapes: both are escaped, as TAP 14 specifies. */
function escapeDescription(text: string): string {
  return oneLine(text).replace(/\\/g, '\\\\').replace(/#/g, '\\#');
}

function escapeDirective(text: string): string {
  return oneLine(text).replace(/\\/g, '\\\\').replace(/#/g, '\\#');
}

const PLAIN = /^[A-Za-z_][A-Za-z0-9_ .\/-]*$/;

/** A YAML scalar: plain when unambiguous, else a JSON string (valid YAML double-quoted). */
function yamlScalar(value: unknown): string {
  if (value === null || value === undefined) return 'null';
  if (typeof value === 'boolean') return String(value);
  if (typeof value === 'number') return Number.isFinite(value) ? String(value) : JSON.stringify(String(value));
  if (typeof value === 'bigint') return JSON.stringify(`0x${value.toString(16)}`);
  const text = String(value);
  return PLAIN.test(text) && !/^(true|false|null|yes|no|on|off|~)$/i.test(text) && !text.endsWith(' ') ? text : JSON.stringify(text);
}

/**
 * YAML for a diagnostics object: scalars, multi-line strings as literal
 * blocks, nested plain objects and arrays of scalars. Keys with undefined
 * values are left out.
 */
export function yamlLines(obj: Record<string, unknown>, indent: string, depth = 0): string[] {
  const out: string[] = [];
  for (const [key, value] of Object.entries(obj)) {
    if (value === undefined) continue;
    const k = PLAIN.test(key) ? key : JSON.stringify(key);
    if (typeof value === 'string' && value.includes('\n')) {
      out.push(`${indent}${k}: |-`);
      for (const l of value.replace(/\r/g, '').split('\n')) out.push(l ? `${indent}  ${l}` : '');
    } else if (Array.isArray(value)) {
      if (value.length === 0) out.push(`${indent}${k}: []`);
      else {
        out.push(`${indent}${k}:`);
        for (const item of value) out.push(`${indent}  - ${yamlScalar(typeof item === 'object' && item !== null ? safeJson(item) : item)}`);
      }
    } else if (isPlainObject(value) && depth < 4) {
      const nested = yamlLines(value, `${indent}  `, depth + 1);
      out.push(nested.length ? `${indent}${k}:` : `${indent}${k}: {}`, ...nested);
    } else if (typeof value === 'object' && value !== null) {
      // Class instances, typed arrays, deep nesting: one JSON line is enough for a diagnostic.
      out.push(`${indent}${k}: ${yamlScalar(safeJson(value))}`);
    } else {
      out.push(`${indent}${k}: ${yamlScalar(value)}`);
    }
  }
  return out;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null) return false;
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

function safeJson(value: unknown): string {
  try {
    return JSON.stringify(value, bigintHex) ?? String(value);
  } catch {
    return String(value);
  }
}

function bigintHex(_key: string, value: unknown): unknown {
  return typeof value === 'bigint' ? `0x${value.toString(16)}` : value;
}
