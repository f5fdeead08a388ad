/**
 * A 16550A UART (the PC's COM1 at I/O port 0x3f8, IRQ 4) as a state machine:
 * register reads and writes in, bytes out and an interrupt line level out.
 * Transmission is instant (the transmitter is always empty), received bytes
 * wait in a FIFO. Enough of the chip for Linux's 8250 driver to detect a
 * 16550A (scratch register, loopback test, FIFO bits) and to run the console
 * with or without interrupts. Pure: no KVM, no streams.
 */

/** The PC's COM1. */
export const COM1 = { port: 0x3f8, irq: 4 } as const;

// Register offsets.
const RBR_THR = 0;
const IER = 1;
const IIR_FCR = 2;
const LCR = 3;
const MCR = 4;
const LSR = 5;
const MSR = 6;
const SCR = 7;

// IER bits.
const IER_RDI = 0x01;
const IER_THRI = 0x02;
const IER_RLSI = 0x04;
const IER_MSI = 0x08;
// IIR values.
const IIR_NO_INT = 0x01;
const IIR_THRI = 0x02;
const IIR_RDI = 0x04;
const IIR_FIFO_ENABLED = 0xc0;
// LCR, MCR, LSR bits.
const LCR_DLAB = 0x80;
const MCR_LOOP = 0x10;
const LSR_DR = 0x01;
const LSR_OE = 0x02;
const LSR_THRE = 0x20;
const LSR_TEMT = 0x40;
// FCR bits.
const FCR_ENABLE = 0x01;
const FCR_CLEAR_RX = 0x02;

/** Bytes the receive FIFO holds before new input is dropped (overrun). */
export const RX_FIFO_LIMIT = 4096;

/** Callbacks of a Uart16550. */
export interface UartSink {
  /** Bytes the guest transmitted. */
  write(bytes: Uint8Array): void;
  /** The interrupt line's new level (called only on changes). */
  irq?(level: boolean): void;
}

/** One 16550A. */
export class Uart16550 {
  #ier = 0;
  #lcr = 0x03; // 8N1
  #mcr = 0x08; // OUT2
  #lsr = LSR_THRE | LSR_TEMT;
  #msr = 0xb0; // DCD, DSR, CTS
  #scr = 0;
  #dll = 0x0c; // 9600 baud
  #dlm = 0;
  #fifo = false;
  /** THR-empty interrupt pending (set when the transmitter empties, cleared by reading IIR or writing THR). */
  #thrPending = false;
  #rx: number[] = [];
  #irqLevel = false;
  readonly #sink: UartSink;
  #pendingOut: number[] = [];

  constructor(sink: UartSink) {
    this.#sink = sink;
  }

  /** Reads register `offset` (0-7). */
  read(offset: number): number {
    switch (offset & 7) {
      case RBR_THR: {
        if (this.#lcr & LCR_DLAB) return this.#dll;
        const byte = this.#rx.shift() ?? 0;
        if (this.#rx.length === 0) this.#lsr &= ~LSR_DR;
        this.#update();
        return byte;
      }
      case IER:
        return this.#lcr & LCR_DLAB ? this.#dlm : this.#ier;
      case IIR_FCR: {
        const iir = this.#iir();
        // Reading IIR while it reports THR empty clears that interrupt.
        if (iir === IIR_THRI) this.#thrPending = false;
        this.#update();
        return iir | (this.#fifo ? IIR_FIFO_ENABLED : 0);
      }
      case LCR:
        return this.#lcr;
      case MCR:
        return this.#mcr;
      case LSR: {
        const lsr = this.#lsr;
        this.#lsr &= ~LSR_OE;
        return lsr;
      }
      case MSR:
        return this.#mcr & MCR_LOOP ? this.#loopbackMsr() : this.#msr;
      default:
        return this.#scr;
    }
  }

  /** Writes register `offset` (0-7). */
  write(offset: number, value: number): void {
    const byte = value & 0xff;
    switch (offset & 7) {
      case RBR_THR:
        if (this.#lcr & LCR_DLAB) {
          this.#dll = byte;
          return;
        }
        if (this.#mcr & MCR_LOOP) this.#receive(byte);
        else this.#pendingOut.push(byte);
        // Sent at once: the transmitter is empty again.
        this.#thrPending = true;
        this.#update();
        return;
      case IER:
        if (this.#lcr & LCR_DLAB) {
          this.#dlm = byte;
          return;
        }
        // Enabling THRI with an empty transmitter raises it at once, as the chip does.
        if (byte & IER_THRI && !(this.#ier & IER_THRI)) this.#thrPending = true;
        this.#ier = byte & (IER_RDI | IER_THRI | IER_RLSI | IER_MSI);
        this.#update();
        return;
      case IIR_FCR:
        this.#fifo = (byte & FCR_ENABLE) !== 0;
        if (byte & FCR_CLEAR_RX) {
          this.#rx = [];
          this.#lsr &= ~LSR_DR;
        }
        this.#update();
        return;
      case LCR:
        this.#lcr = byte;
        return;
      case MCR:
        this.#mcr = byte & 0x1f;
        this.#update();
        return;
      case LSR:
      case MSR:
        return; // read-only
      default:
        this.#scr = byte;
    }
  }

  /** Hands transmitted bytes to the sink (call after a batch of writes, e.g. per exit). */
  flush(): void {
    if (this.#pendingOut.length === 0) return;
    const out = Uint8Array.from(this.#pendingOut);
    this.#pendingOut = [];
    this.#sink.write(out);
  }

  /** Bytes from the outside (a TTY) into the receive FIFO. */
  receive(bytes: Uint8Array): void {
    for (const b of bytes) this.#receive(b);
    this.#update();
  }

  /** The interrupt line's current level. */
  get irqLevel(): boolean {
    return this.#irqLevel;
  }

  /** Divisor latch (baud = 115200 / divisor). */
  get divisor(): number {
    return (this.#dlm << 8) | this.#dll;
  }

  #receive(byte: number): void {
    if (this.#rx.length >= RX_FIFO_LIMIT) {
      this.#lsr |= LSR_OE;
      return;
    }
    this.#rx.push(byte);
    this.#lsr |= LSR_DR;
  }

  #iir(): number {
    if (this.#ier & IER_RDI && this.#lsr & LSR_DR) return IIR_RDI;
    if (this.#ier & IER_THRI && this.#thrPending) return IIR_THRI;
    return IIR_NO_INT;
  }

  #loopbackMsr(): number {
    // In loopback the modem inputs follow the outputs: RTS->CTS, DTR->DSR, OUT1->RI, OUT2->DCD.
    const m = this.#mcr;
    return ((m & 0x02) << 3) | ((m & 0x01) << 5) | ((m & 0x04) << 4) | ((m & 0x08) << 4);
  }

  #update(): void {
    const level = this.#iir() !== IIR_NO_INT;
    if (level !== this.#irqLevel) {
      this.#irqLevel = level;
      this.#sink.irq?.(level);
    }
  }
}
