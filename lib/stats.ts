/**
 * KVM binary statistics (KVM_GET_STATS_FD): descriptors are read once,
 * values on every call, by name.
 */
import { callNative } from './errors.js';
import { native } from './native.js';

/**
 * How a statistic behaves (KVM_STATS_TYPE_*): a counter that only grows, a
 * current value, a peak, or a histogram; `type-<n>` for a type newer than
 * node-kvm.
 */
export type StatType = 'cumulative' | 'instant' | 'peak' | 'linear-hist' | 'log-hist' | `type-${number}`;
/** The unit of a statistic's value (KVM_STATS_UNIT_*); `unit-<n>` for a newer one. */
export type StatUnit = 'none' | 'bytes' | 'seconds' | 'cycles' | 'boolean' | `unit-${number}`;

/** One statistic's descriptor. */
export interface StatDescriptor {
  /** The statistic's name ('exits', 'pages_4k'). */
  name: string;
  /** How it behaves; histograms ('linear-hist', 'log-hist') read as arrays of buckets. */
  type: StatType;
  /** The unit of its value. */
  unit: StatUnit;
  /** Base-10 or base-2 exponent applied to the value's unit. */
  exponent: number;
  /** The base of `exponent`. */
  base: 2 | 10;
  /** Number of u64 values (1, or the histogram's buckets). */
  size: number;
  /** Byte offset of its values in the stats data block. */
  offset: number;
}

/** The value a descriptor of type T describes: the buckets of a histogram, otherwise one u64. */
export type StatValue<T extends StatType = StatType> = T extends 'linear-hist' | 'log-hist' ? bigint[] : bigint;

/** Values by name: a bigint, or an array of buckets for a histogram (descriptor `size` > 1). */
export type Stats = Record<string, bigint | bigint[]>;

/**
 * Statistics with the names a kernel is known to report typed by their
 * descriptors' types (`Known` maps name to StatType; a `?` marks one that
 * older kernels lack), and any other name as a bigint or buckets.
 */
export type TypedStats<Known extends { [K in keyof Known]?: StatType }> = {
  readonly [K in keyof Known]: StatValue<Exclude<Known[K], undefined>>;
} & Readonly<Stats>;

/** Statistics every x86 KVM VM has had since binary stats (Linux 5.14), and later ones as optional. */
export interface VmStatTypes {
  remote_tlb_flush: 'cumulative';
  remote_tlb_flush_requests?: 'cumulative';
  mmu_shadow_zapped: 'cumulative';
  mmu_pte_write: 'cumulative';
  mmu_pde_zapped: 'cumulative';
  mmu_flooded: 'cumulative';
  mmu_recycled: 'cumulative';
  mmu_cache_miss: 'cumulative';
  mmu_unsync: 'instant';
  /** Guest memory mapped with 4 KiB pages by KVM's MMU (TDP or shadow). */
  pages_4k: 'instant';
  /** The same for 2 MiB pages. */
  pages_2m: 'instant';
  /** The same for 1 GiB pages. */
  pages_1g: 'instant';
  nx_lpage_splits: 'instant';
  max_mmu_rmap_size: 'peak';
  max_mmu_page_hash_collisions: 'peak';
}

/** Statistics every x86 KVM vcpu has had since binary stats (Linux 5.14), and later ones as optional. */
export interface VcpuStatTypes {
  halt_successful_poll: 'cumulative';
  halt_attempted_poll: 'cumulative';
  halt_poll_invalid: 'cumulative';
  halt_wakeup: 'cumulative';
  halt_poll_success_ns: 'cumulative';
  halt_poll_fail_ns: 'cumulative';
  halt_wait_ns?: 'cumulative';
  halt_poll_success_hist?: 'log-hist';
  halt_poll_fail_hist?: 'log-hist';
  halt_wait_hist?: 'log-hist';
  blocking?: 'instant';
  /** Page faults KVM handled for the guest (newer kernels). */
  pf_taken?: 'cumulative';
  pf_fixed: 'cumulative';
  pf_emulate?: 'cumulative';
  pf_spurious?: 'cumulative';
  pf_fast?: 'cumulative';
  pf_mmio_spte_created?: 'cumulative';
  pf_guest: 'cumulative';
  tlb_flush: 'cumulative';
  invlpg: 'cumulative';
  /** Every exit from the guest to KVM. */
  exits: 'cumulative';
  io_exits: 'cumulative';
  mmio_exits: 'cumulative';
  signal_exits: 'cumulative';
  irq_window_exits: 'cumulative';
  nmi_window_exits: 'cumulative';
  l1d_flush: 'cumulative';
  halt_exits: 'cumulative';
  request_irq_exits: 'cumulative';
  irq_exits: 'cumulative';
  host_state_reload: 'cumulative';
  fpu_reload: 'cumulative';
  insn_emulation: 'cumulative';
  insn_emulation_fail: 'cumulative';
  hypercalls: 'cumulative';
  irq_injections: 'cumulative';
  nmi_injections: 'cumulative';
  req_event: 'cumulative';
  nested_run: 'cumulative';
  directed_yield_attempted: 'cumulative';
  directed_yield_successful: 'cumulative';
  preemption_reported?: 'cumulative';
  preemption_other?: 'cumulative';
  guest_mode: 'instant';
  notify_window_exits?: 'cumulative';
}

/** A VM's statistics (Vm.stats()). */
export type VmStats = TypedStats<VmStatTypes>;
/** A vcpu's statistics (Vcpu.stats()). */
export type VcpuStats = TypedStats<VcpuStatTypes>;

const TYPES: readonly StatType[] = ['cumulative', 'instant', 'peak', 'linear-hist', 'log-hist'];
const UNITS: readonly StatUnit[] = ['none', 'bytes', 'seconds', 'cycles', 'boolean'];

/** @internal A parsed stats fd. The fd itself is owned by the VM or vcpu. */
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

  /** Reads every statistic now (histograms, by their descriptor's type, as arrays of buckets). */
  read<T extends Stats = Stats>(): T {
    const raw = callNative('pread', { what: 'stats data' }, () => native.pread(this.#fd, this.#dataSize, this.#dataOffset));
    const v = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    const out: Stats = {};
    for (const d of this.descriptors) {
      const hist = d.type === 'linear-hist' || d.type === 'log-hist';
      if (!hist && d.size === 1) out[d.name] = v.getBigUint64(d.offset, true);
      else out[d.name] = Array.from({ length: d.size }, (_, i) => v.getBigUint64(d.offset + i * 8, true));
    }
    return out as T;
  }
}
