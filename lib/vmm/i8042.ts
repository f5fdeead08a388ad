/**
 * The PC keyboard controller (i8042) at ports 0x60 (data) and 0x64
 * (status/command), reduced to what a VMM needs: Linux's probe finds a
 * controller that passes its self-test, and the reset line (command 0xFE, or
 * a write of the output port with bit 0 clear) asks the VMM to end. No
 * keyboard or mouse is attached. Pure.
 */

/** The data port. */
export const I8042_DATA_PORT = 0x60;
/** The status (read) and command (write) port. */
export const I8042_COMMAND_PORT = 0x64;

const STATUS_OUTPUT_FULL = 0x01;
const STATUS_SYSTEM = 0x04;
const STATUS_COMMAND = 0x08;
/** Keyboard not inhibited (clear means "keylock active"). */
const STATUS_UNLOCKED = 0x10;

const CMD_READ_CONFIG = 0x20;
const CMD_WRITE_CONFIG = 0x60;
const CMD_DISABLE_AUX = 0xa7;
const CMD_ENABLE_AUX = 0xa8;
const CMD_TEST_AUX = 0xa9;
const CMD_SELF_TEST = 0xaa;
const CMD_TEST_KBD = 0xab;
const CMD_DISABLE_KBD = 0xad;
const CMD_ENABLE_KBD = 0xae;
const CMD_READ_OUTPUT_PORT = 0xd0;
const CMD_WRITE_OUTPUT_PORT = 0xd1;
const CMD_PULSE_RESET = 0xfe;

/** One i8042. `onReset` is called when the guest pulls the CPU reset line. */
export class I8042 {
  #config = 0x45; // translate, system flag, keyboard interrupt
  #output: number[] = [];
  #expectData: 'config' | 'output-port' | undefined;
  #status = STATUS_SYSTEM | STATUS_UNLOCKED;
  readonly #onReset: () => void;
  /** Whether the guest has asked for a reset. */
  resetRequested = false;

  constructor(onReset: () => void) {
    this.#onReset = onReset;
  }

  /** A read of port 0x60 or 0x64. */
  read(port: number): number {
    if (port === I8042_COMMAND_PORT) return this.#status | (this.#output.length ? STATUS_OUTPUT_FULL : 0);
    return this.#output.shift() ?? 0;
  }

  /** A write of port 0x60 or 0x64. */
  write(port: number, value: number): void {
    const byte = value & 0xff;
    if (port === I8042_COMMAND_PORT) {
      this.#status |= STATUS_COMMAND;
      this.#command(byte);
      return;
    }
    this.#status &= ~STATUS_COMMAND;
    const expect = this.#expectData;
    this.#expectData = undefined;
    if (expect === 'config') this.#config = byte;
    else if (expect === 'output-port' && (byte & 1) === 0) this.#reset();
    // Bytes for the (absent) keyboard are dropped; an absent device does not answer.
  }

  #command(cmd: number): void {
    switch (cmd) {
      case CMD_READ_CONFIG:
        this.#output.push(this.#config);
        break;
      case CMD_WRITE_CONFIG:
        this.#expectData = 'config';
        break;
      case CMD_SELF_TEST:
        this.#output.push(0x55);
        break;
      case CMD_TEST_KBD:
      case CMD_TEST_AUX:
        this.#output.push(0x00);
        break;
      case CMD_READ_OUTPUT_PORT:
        this.#output.push(0x01);
        break;
      case CMD_WRITE_OUTPUT_PORT:
        this.#expectData = 'output-port';
        break;
      case CMD_DISABLE_KBD:
        this.#config |= 0x10;
        break;
      case CMD_ENABLE_KBD:
        this.#config &= ~0x10;
        break;
      case CMD_DISABLE_AUX:
        this.#config |= 0x20;
        break;
      case CMD_ENABLE_AUX:
        this.#config &= ~0x20;
        break;
      case CMD_PULSE_RESET:
        this.#reset();
        break;
      default:
        // 0xf0-0xff pulse output lines; bit 0 is reset.
        if (cmd >= 0xf0 && (cmd & 1) === 0) this.#reset();
        break;
    }
  }

  #reset(): void {
    this.resetRequested = true;
    this.#onReset();
  }
}
