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
  /** TLB flushes KVM issued to all vcpus of the VM. */
  remote_tlb_flush: 'cumulative';
  /** Requests for such a flush (some are merged). */
  remote_tlb_flush_requests?: 'cumulative';
  /** Shadow pages zapped (shadow paging). */
  mmu_shadow_zapped: 'cumulative';
  /** Guest writes to page tables KVM shadows. */
  mmu_pte_write: 'cumulative';
  /** Page directory entries zapped on such writes. */
  mmu_pde_zapped: 'cumulative';
  /** Shadow pages unshadowed after repeated guest writes. */
  mmu_flooded: 'cumulative';
  /** Shadow pages reclaimed to stay within the MMU page limit. */
  mmu_recycled: 'cumulative';
  /** Shadow page lookups that had to allocate a page. */
  mmu_cache_miss: 'cumulative';
  /** Shadow pages currently out of sync with the guest tables. */
  mmu_unsync: 'instant';
  /** Guest memory mapped with 4 KiB pages by KVM's MMU (TDP or shadow). */
  pages_4k: 'instant';
  /** The same for 2 MiB pages. */
  pages_2m: 'instant';
  /** The same for 1 GiB pages. */
  pages_1g: 'instant';
  /** Huge pages split to enforce NX (the iTLB multihit mitigation). */
  nx_lpage_splits: 'instant';
  /** Longest reverse-map chain seen. */
  max_mmu_rmap_size: 'peak';
  /** Longest shadow-page hash chain seen. */
  max_mmu_page_hash_collisions: 'peak';
}

/** Statistics every x86 KVM vcpu has had since binary stats (Linux 5.14), and later ones as optional. */
export interface VcpuStatTypes {
  /** Halt polls that found work before sleeping. */
  halt_successful_poll: 'cumulative';
  /** Halt polls attempted. */
  halt_attempted_poll: 'cumulative';
  /** Halt polls cut short as invalid. */
  halt_poll_invalid: 'cumulative';
  /** Wake-ups from a halt. */
  halt_wakeup: 'cumulative';
  /** Nanoseconds spent in successful halt polls. */
  halt_poll_success_ns: 'cumulative';
  /** Nanoseconds spent in failed halt polls. */
  halt_poll_fail_ns: 'cumulative';
  /** Nanoseconds spent halted, waiting. */
  halt_wait_ns?: 'cumulative';
  /** Histogram of successful halt-poll durations. */
  halt_poll_success_hist?: 'log-hist';
  /** Histogram of failed halt-poll durations. */
  halt_poll_fail_hist?: 'log-hist';
  /** Histogram of halt-wait durations. */
  halt_wait_hist?: 'log-hist';
  /** 1 while the vcpu is blocked (halted), else 0. */
  blocking?: 'instant';
  /** Page faults KVM handled for the guest (newer kernels). */
  pf_taken?: 'cumulative';
  /** Page faults fixed by installing a mapping. */
  pf_fixed: 'cumulative';
  /** Page faults resolved by emulating the instruction. */
  pf_emulate?: 'cumulative';
  /** Page faults that found the mapping already present. */
  pf_spurious?: 'cumulative';
  /** Page faults fixed on the lockless fast path. */
  pf_fast?: 'cumulative';
  /** MMIO mappings created by page faults. */
  pf_mmio_spte_created?: 'cumulative';
  /** Page faults reflected to the guest. */
  pf_guest: 'cumulative';
  /** TLB flushes of this vcpu. */
  tlb_flush: 'cumulative';
  /** INVLPG instructions handled. */
  invlpg: 'cumulative';
  /** Every exit from the guest to KVM. */
  exits: 'cumulative';
  /** Exits for port I/O. */
  io_exits: 'cumulative';
  /** Exits for MMIO. */
  mmio_exits: 'cumulative';
  /** Exits because a signal was pending (EINTR from KVM_RUN). */
  signal_exits: 'cumulative';
  /** Exits to open an interrupt window. */
  irq_window_exits: 'cumulative';
  /** Exits to open an NMI window. */
  nmi_window_exits: 'cumulative';
  /** L1 data cache flushes on entry (L1TF mitigation). */
  l1d_flush: 'cumulative';
  /** Exits for HLT. */
  halt_exits: 'cumulative';
  /** Exits because userspace requested an interrupt window. */
  request_irq_exits: 'cumulative';
  /** Exits for host external interrupts. */
  irq_exits: 'cumulative';
  /** Reloads of host state (MSRs, segments) after the guest ran. */
  host_state_reload: 'cumulative';
  /** FPU state reloads. */
  fpu_reload: 'cumulative';
  /** Instructions emulated by KVM. */
  insn_emulation: 'cumulative';
  /** Instructions KVM failed to emulate. */
  insn_emulation_fail: 'cumulative';
  /** Hypercalls handled. */
  hypercalls: 'cumulative';
  /** Interrupts injected. */
  irq_injections: 'cumulative';
  /** NMIs injected. */
  nmi_injections: 'cumulative';
  /** Event requests processed. */
  req_event: 'cumulative';
  /** Nested guest entries (VMLAUNCH/VMRUN by the guest). */
  nested_run: 'cumulative';
  /** Directed yields to another vcpu attempted. */
  directed_yield_attempted: 'cumulative';
  /** Directed yields that succeeded. */
  directed_yield_successful: 'cumulative';
  /** Preemptions reported to the guest (steal time). */
  preemption_reported?: 'cumulative';
  /** Preemptions not reported. */
  preemption_other?: 'cumulative';
  /** 1 while the vcpu runs a nested guest, else 0. */
  guest_mode: 'instant';
  /** Exits from the notify-window (VM notify) feature. */
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
