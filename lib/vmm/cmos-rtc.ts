/**
 * The CMOS and its MC146818 real-time clock at ports 0x70 (index) and 0x71
 * (data). Linux reads the wall clock from it at boot (read_persistent_clock)
 * and waits while register A's update-in-progress bit is set, so a port that
 * reads all ones hangs it there. This one reports the host's UTC time in BCD,
 * 24-hour mode, never an update in progress, and keeps the other bytes as
 * plain CMOS memory. No alarms, periodic interrupt or update interrupts.
 */

/** The index port (bit 7 of a write disables NMIs). */
export const CMOS_INDEX_PORT = 0x70;
/** The data port: the byte at the last index written. */
export const CMOS_DATA_PORT = 0x71;

const REG_SECONDS = 0x00;
const REG_MINUTES = 0x02;
const REG_HOURS = 0x04;
const REG_WEEKDAY = 0x06;
const REG_DAY = 0x07;
const REG_MONTH = 0x08;
const REG_YEAR = 0x09;
const REG_A = 0x0a;
const REG_B = 0x0b;
const REG_C = 0x0c;
const REG_D = 0x0d;
const REG_CENTURY = 0x32;
/** Register A: 32.768 kHz time base, 1024 Hz rate, UIP clear. */
const A_DEFAULT = 0x26;
/** Register B: 24-hour mode, BCD, no interrupts. */
const B_24H = 0x02;
/** Register D: the battery is good (valid RAM and time). */
const D_VRT = 0x80;
/** Bit 7 of an index write disables NMIs, not part of the index. */
const NMI_DISABLE = 0x80;

const bcd = (n: number): number => ((Math.floor(n / 10) % 10) << 4) | (n % 10);

/** The CMOS: 128 bytes, the clock's registers computed from `now()` when read. */
export class CmosRtc {
  readonly #ram = new Uint8Array(128);
  readonly #now: () => Date;
  #index = 0;

  /** `now` gives the time the clock reports (default: the host's). */
  constructor(now: () => Date = () => new Date()) {
    this.#now = now;
    this.#ram[REG_A] = A_DEFAULT;
    this.#ram[REG_B] = B_24H;
    this.#ram[REG_D] = D_VRT;
  }

  /** A guest read of `port` (0x70 or 0x71). */
  read(port: number): number {
    if (port === CMOS_INDEX_PORT) return this.#index;
    return this.#register(this.#index);
  }

  /** A guest write of `value` to `port`. */
  write(port: number, value: number): void {
    if (port === CMOS_INDEX_PORT) {
      this.#index = value & ~NMI_DISABLE & 0x7f;
      return;
    }
    // The clock's own registers follow the host; C and D are read-only.
    if (this.#index === REG_C || this.#index === REG_D) return;
    if (this.#index === REG_A) value &= 0x7f; // UIP is read-only
    this.#ram[this.#index] = value & 0xff;
  }

  #register(index: number): number {
    const t = this.#now();
    switch (index) {
      case REG_SECONDS: return bcd(t.getUTCSeconds());
      case REG_MINUTES: return bcd(t.getUTCMinutes());
      case REG_HOURS: return bcd(t.getUTCHours());
      case REG_WEEKDAY: return bcd(t.getUTCDay() + 1);
      case REG_DAY: return bcd(t.getUTCDate());
      case REG_MONTH: return bcd(t.getUTCMonth() + 1);
      case REG_YEAR: return bcd(t.getUTCFullYear() % 100);
      case REG_CENTURY: return bcd(Math.floor(t.getUTCFullYear() / 100));
      case REG_C: return 0; // no interrupt flags
      default: return this.#ram[index]!;
    }
  }
}
