/**
 * The guest's console as the VMM sees it: bytes from the UART go to an
 * output stream, and are watched line by line for what ends or marks a boot
 * (the test's marker, "Kernel panic", the kernel's "reboot: Power down"),
 * since a guest without ACPI has no other way to say it powered off. Pure
 * apart from the stream it is given.
 */

/** What a console line can tell the VMM. */
export type ConsoleEvent = 'marker' | 'panic' | 'power-down' | 'restart' | 'halt';

/** Where console bytes go. */
export interface ConsoleOutput {
  write(bytes: Uint8Array): unknown;
}

const PATTERNS: readonly [ConsoleEvent, RegExp][] = [
  ['panic', /Kernel panic - not syncing/],
  ['power-down', /reboot: Power down/],
  ['restart', /reboot: Restarting system/],
  ['halt', /reboot: System halted/],
];

/** Options of {@link ConsoleWatcher}. */
export interface ConsoleWatcherOptions {
  output?: ConsoleOutput | undefined;
  /** A string whose first appearance is reported as 'marker'. */
  marker?: string | undefined;
  /** Called once per event kind, with the time since start (ms) and the line. */
  onEvent?: (event: ConsoleEvent, line: string) => void;
  /** Bytes of output kept for the report (the tail). Default 64 KiB. */
  keep?: number;
}

/** Splits the UART's bytes into lines and reports events. */
export class ConsoleWatcher {
  readonly #options: ConsoleWatcherOptions;
  readonly #decoder = new TextDecoder('latin1');
  #line = '';
  #tail = '';
  readonly #seen = new Set<ConsoleEvent>();
  /** Bytes seen so far. */
  bytes = 0;

  constructor(options: ConsoleWatcherOptions = {}) {
    this.#options = options;
  }

  /** Bytes from the UART. */
  write(bytes: Uint8Array): void {
    this.bytes += bytes.byteLength;
    this.#options.output?.write(bytes);
    const text = this.#decoder.decode(bytes);
    const keep = this.#options.keep ?? 65536;
    this.#tail = (this.#tail + text).slice(-keep);
    this.#line += text;
    const marker = this.#options.marker;
    // The marker may come without a newline (a prompt): check the partial line too.
    if (marker && !this.#seen.has('marker') && this.#line.includes(marker)) this.#emit('marker', this.#line);
    let nl: number;
    while ((nl = this.#line.indexOf('\n')) >= 0) {
      const line = this.#line.slice(0, nl).replace(/\r$/, '');
      this.#line = this.#line.slice(nl + 1);
      for (const [event, re] of PATTERNS) if (re.test(line)) this.#emit(event, line);
    }
    if (this.#line.length > 4096) this.#line = this.#line.slice(-4096);
  }

  /** Whether an event has been seen. */
  has(event: ConsoleEvent): boolean {
    return this.#seen.has(event);
  }

  /** The last bytes of output. */
  get tail(): string {
    return this.#tail;
  }

  #emit(event: ConsoleEvent, line: string): void {
    if (this.#seen.has(event)) return;
    this.#seen.add(event);
    this.#options.onEvent?.(event, line);
  }
}
