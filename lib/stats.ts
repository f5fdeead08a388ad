/**
 * KVM binary statistics (KVM_GET_STATS_FD): descriptors are read once,
 * values on every call, by name.
 */
import { callNative } from './errors.js';
import { native } from './native.js';

/** One statistic's descriptor. */
export interface StatDescriptor {
  name: string;
  /** 'cumulative' | 'instant' | 'peak' | 'linear-hist' | 'log-hist'. */
  type: string;
  /** 'none' | 'bytes' | 'seconds' | 'cycles' | 'boolean'. */
  unit: string;
  /** Base-10 or base-2 exponent applied to the value's unit. */
  exponent: number;
  base: 2 | 10;
  /** Number of u64 values (1, or the histogram's buckets). */
  size: number;
  offset: number;
}

/** Values by name: a bigint, or an array for histograms. */
export type Stats = Record<string, bigint | bigint[]>;

const TYPES = ['cumulative', 'instant', 'peak', 'linear-hist', 'log-hist'];
const UNITS = ['none', 'bytes', 'seconds', 'cycles', 'boolean'];

/** A parsed stats fd. The fd itself is owned by the VM or vcpu. */
export class StatsReader {
  readonly descriptors: readonly StatDescriptor[];
  readonly #fd: number;
  readonly #dataOffset: bigint;
  readonly #dataSize: number;

  constructor(fd: number) {
    this.#fd = fd;
    const header = new DataView(callNative('pread', { what: 'stats header' }, () => native.pread(fd, 24, 0n)).slice().buffer);
    const nameSize = header.getUint32(4, true);
    const numDesc = header.getUint32(8, true);
    const descOffset = header.getUint32(16, true);
    this.#dataOffset = BigInt(header.getUint32(20, true));
    const descSize = 16 + nameSize;
    const raw = callNative('pread', { what: 'stats descriptors' }, () => native.pread(fd, numDesc * descSize, BigInt(descOffset)));
    const v = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    const descriptors: StatDescriptor[] = [];
    let end = 0;
    for (let i = 0; i < numDesc; i++) {
      const off = i * descSize;
      const flags = v.getUint32(off, true);
      const nameBytes = raw.subarray(off + 16, off + 16 + nameSize);
      const nul = nameBytes.indexOf(0);
      const name = new TextDecoder().decode(nameBytes.subarray(0, nul < 0 ? nameSize : nul));
      const d: StatDescriptor = {
        name,
        type: TYPES[flags & 0xf] ?? `type-${flags & 0xf}`,
        unit: UNITS[(flags >> 4) & 0xf] ?? `unit-${(flags >> 4) & 0xf}`,
        base: ((flags >> 8) & 0xf) === 1 ? 2 : 10,
        exponent: v.getInt16(off + 4, true),
        size: v.getUint16(off + 6, true),
        offset: v.getUint32(off + 8, true),
      };
      descriptors.push(d);
      end = Math.max(end, d.offset + d.size * 8);
    }
    this.descriptors = descriptors;
    this.#dataSize = end;
  }

  /** Reads every statistic now. */
  read(): Stats {
    const raw = callNative('pread', { what: 'stats data' }, () => native.pread(this.#fd, this.#dataSize, this.#dataOffset));
    const v = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    const out: Stats = {};
    for (const d of this.descriptors) {
      if (d.size === 1) out[d.name] = v.getBigUint64(d.offset, true);
      else out[d.name] = Array.from({ length: d.size }, (_, i) => v.getBigUint64(d.offset + i * 8, true));
    }
    return out;
  }
}
