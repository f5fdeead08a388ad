/**
 * Port I/O dispatch: which device answers which ports, and what an unclaimed
 * port does (reads all ones, as on a PC bus with nothing there; writes are
 * dropped). Counts accesses per port so a boot can say what the guest
 * touched. Pure.
 */

/** A device on the port bus. `offset` is relative to the range's first port. */
export interface PortDevice {
  read(offset: number, size: number): number;
  write(offset: number, size: number, value: number): void;
}

interface Range {
  first: number;
  count: number;
  name: string;
  device: PortDevice;
}

/** Ports Linux probes on a PC that this VMM leaves silent on purpose. */
export const SILENT_PORTS: readonly { first: number; count: number; name: string }[] = [
  { first: 0x80, count: 1, name: 'post-code' }, // io_delay writes
  { first: 0x2f8, count: 8, name: 'com2' },
  { first: 0x3e8, count: 8, name: 'com3' },
  { first: 0x2e8, count: 8, name: 'com4' },
  { first: 0x70, count: 2, name: 'cmos' },
  { first: 0xcf8, count: 8, name: 'pci-config' },
  { first: 0x3c0, count: 0x20, name: 'vga' },
  { first: 0x87, count: 1, name: 'dma-page' },
  { first: 0xed, count: 1, name: 'io-delay' },
];

/** The port bus. */
export class IoBus {
  readonly #ranges: Range[] = [];
  /** Accesses by port, for reporting (`unclaimed` are the ones no device answered). */
  readonly counts = new Map<number, number>();
  readonly unclaimed = new Map<number, number>();

  /** Attaches `device` to ports [first, first + count). Overlaps throw. */
  add(first: number, count: number, name: string, device: PortDevice): void {
    if (!Number.isInteger(first) || !Number.isInteger(count) || first < 0 || count < 1 || first + count > 0x10000) {
      throw new RangeError(`bad port range ${first}+${count} for ${name}`);
    }
    const clash = this.#ranges.find((r) => first < r.first + r.count && r.first < first + count);
    if (clash) throw new RangeError(`ports 0x${first.toString(16)}+${count} (${name}) overlap ${clash.name}`);
    this.#ranges.push({ first, count, name, device });
    this.#ranges.sort((a, b) => a.first - b.first);
  }

  /** Attaches the silent ports (reads all ones, writes dropped) that are not claimed yet. */
  addSilent(): void {
    for (const p of SILENT_PORTS) {
      const taken = this.#ranges.some((r) => p.first < r.first + r.count && r.first < p.first + p.count);
      if (!taken) this.add(p.first, p.count, p.name, { read: (_o, size) => allOnes(size), write: () => {} });
    }
  }

  /** A read of `size` (1, 2, 4) bytes at `port`. */
  read(port: number, size: number): number {
    this.#count(port);
    const r = this.#find(port);
    if (!r) {
      this.unclaimed.set(port, (this.unclaimed.get(port) ?? 0) + 1);
      return allOnes(size);
    }
    return r.device.read(port - r.first, size);
  }

  /** A write of `size` bytes at `port`. */
  write(port: number, size: number, value: number): void {
    this.#count(port);
    const r = this.#find(port);
    if (!r) {
      this.unclaimed.set(port, (this.unclaimed.get(port) ?? 0) + 1);
      return;
    }
    r.device.write(port - r.first, size, value);
  }

  #count(port: number): void {
    this.counts.set(port, (this.counts.get(port) ?? 0) + 1);
  }

  #find(port: number): Range | undefined {
    for (const r of this.#ranges) {
      if (port < r.first) return undefined;
      if (port < r.first + r.count) return r;
    }
    return undefined;
  }
}

/** 0xff, 0xffff or 0xffffffff. */
export function allOnes(size: number): number {
  return size >= 4 ? 0xffff_ffff : (1 << (size * 8)) - 1;
}

/**
 * Performs one KVM_EXIT_IO on the bus: `data` holds `count` items of `size`
 * bytes (string I/O repeats); OUT reads them, IN fills them.
 */
export function dispatchIo(bus: IoBus, exit: { direction: 'in' | 'out'; size: number; port: number; count: number; data: Uint8Array }): void {
  const { size, port, data } = exit;
  const v = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const count = Math.min(exit.count, Math.floor(data.byteLength / Math.max(size, 1)));
  for (let i = 0; i < count; i++) {
    const off = i * size;
    if (exit.direction === 'out') {
      const value = size === 1 ? v.getUint8(off) : size === 2 ? v.getUint16(off, true) : v.getUint32(off, true);
      bus.write(port, size, value);
    } else {
      const value = bus.read(port, size);
      if (size === 1) v.setUint8(off, value & 0xff);
      else if (size === 2) v.setUint16(off, value & 0xffff, true);
      else v.setUint32(off, value >>> 0, true);
    }
  }
}
