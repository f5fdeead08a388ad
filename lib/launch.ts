/**
 * The confidential-launch flow on a software-protected VM: initial contents go
 * into guest_memfd-backed private memory, measured page by page like a launch
 * digest, then pre-faulted, then the guest runs from them.
 *
 * What this models, and what it does not:
 * - SNP (SNP_LAUNCH_UPDATE) and TDX (TDH.MEM.PAGE.ADD + TDH.MR.EXTEND) copy each
 *   initial page into private memory inside the trusted firmware/module, encrypt
 *   it and extend a measurement over (page contents, gpa, page type) in order; the
 *   final digest is signed in an attestation report the guest owner checks. Here
 *   the measurement is the same kind of chain (SHA-384, see measureLaunchPages),
 *   computed by the host over the same ordered pages: it lets a test or a VMM
 *   check that the pages loaded are the pages meant, and nothing more. No
 *   encryption, no integrity protection, no attestation, no trusted party: on a
 *   sw-protected VM the host kernel can read private memory, it just does not
 *   map it to userspace.
 * - Linux 7.3's guest_memfd on a sw-protected VM cannot be written by the host
 *   (no INIT_SHARED, no populate ioctl for this VM type), so the copy into private
 *   memory is done by a loader running in the guest (the mailbox guest's COPY),
 *   from a shared staging buffer the host filled; the staging buffer is wiped after.
 *   On SNP/TDX that copy is the firmware's.
 */
import { createHash } from 'node:crypto';
import { convertMemory, type ConversionResult } from './conversion.js';
import { invalidArgument, KvmError } from './errors.js';
import type { MailboxDriver } from './guest/mailbox.js';
import { PAGE_SIZE, toU64, type U64Like } from './int.js';
import { HostMemory } from './memory.js';
import type { PreFaultResult } from './prefault/index.js';
import { Vcpu } from './vcpu.js';
import { Vm } from './vm.js';
import { readOptions } from './vm/struct.js';

/** One initial page run: `data` (a whole number of pages) goes to `guestPhysAddr`. */
export interface LaunchPages {
  /** Guest-physical address of the first page (page aligned). */
  guestPhysAddr: U64Like;
  /** The initial contents: a whole number of 4 KiB pages. */
  data: Uint8Array;
}

/** The launch measurement. */
export interface LaunchMeasurement {
  /** The hash chained over the pages (SHA-384, as SNP's launch digest). */
  algorithm: 'sha384';
  /** Hex digest after the last page. */
  digest: string;
  /** Pages measured. */
  pages: number;
}

/** Page type recorded in the measurement (SNP's PAGE_TYPE_NORMAL is 1). */
const PAGE_TYPE_NORMAL = 1;

/**
 * The launch digest over pages in order: starting from 48 zero bytes, for each
 * 4 KiB page, digest = SHA-384(digest || SHA-384(page) || gpa as u64 LE || type u8),
 * the shape of SNP's PAGE_INFO chain. Order matters, as on hardware.
 */
export function measureLaunchPages(pages: readonly LaunchPages[]): LaunchMeasurement {
  let digest: Buffer = Buffer.alloc(48);
  let count = 0;
  for (const run of checkPages(pages, 'measureLaunchPages')) {
    for (let off = 0; off < run.data.length; off += Number(PAGE_SIZE)) {
      const page = run.data.subarray(off, off + Number(PAGE_SIZE));
      const info = Buffer.alloc(48 + 48 + 8 + 1);
      digest.copy(info, 0);
      createHash('sha384').update(page).digest().copy(info, 48);
      info.writeBigUInt64LE(run.gpa + BigInt(off), 96);
      info.writeUInt8(PAGE_TYPE_NORMAL, 104);
      digest = createHash('sha384').update(info).digest();
      count++;
    }
  }
  return { algorithm: 'sha384', digest: digest.toString('hex'), pages: count };
}

function checkPages(pages: readonly LaunchPages[], op: string): { gpa: bigint; data: Uint8Array }[] {
  if (!Array.isArray(pages)) throw invalidArgument(op, 'pages must be an array of { guestPhysAddr, data }');
  return pages.map((p, i) => {
    if (typeof p !== 'object' || p === null || !(p.data instanceof Uint8Array)) throw invalidArgument(op, `pages[${i}] must be { guestPhysAddr, data: Uint8Array }`);
    const gpa = toU64(p.guestPhysAddr, 'guestPhysAddr', op);
    const data = p.data;
    if (gpa % PAGE_SIZE !== 0n || data.length === 0 || data.length % Number(PAGE_SIZE) !== 0) {
      throw invalidArgument(op, `pages[${i}]: guestPhysAddr must be page aligned and data a non-zero whole number of pages`, { guestPhysAddr: gpa, length: data.length });
    }
    return { gpa, data };
  });
}

/** Options of launchPrivateGuest(). */
export interface PrivateLaunchOptions {
  /** The initial contents, in measurement order. Each run must lie in a guest_memfd slot. */
  pages: readonly LaunchPages[];
  /** The vcpu used to pre-fault (and whose guest is the loader). */
  vcpu: Vcpu;
  /** The loader: a mailbox guest on `vcpu` (lib/guest/mailbox.ts). */
  loader: MailboxDriver;
  /** A shared staging buffer the loader copies from: its gpa and the host memory behind it. */
  staging: { guestPhysAddr: U64Like; memory: HostMemory; offset?: U64Like; size: U64Like };
  /** Pre-fault engine; default 'auto'. */
  engine?: 'auto' | 'kernel' | 'software';
}

/** What launchPrivateGuest() did. */
export interface PrivateLaunch {
  /** The launch digest over the populated pages, in order. */
  measurement: LaunchMeasurement;
  /** The shared-to-private conversions made, one per page run. */
  conversions: ConversionResult[];
  /** The pre-faults of the private ranges, one per page run. */
  preFaults: PreFaultResult[];
  /** Bytes copied into private memory by the loader. */
  bytesLoaded: bigint;
}

/**
 * Runs the launch: measure, convert each run to private (allocating it in its
 * guest_memfd), pre-fault it, copy it in through the loader, wipe the staging
 * buffer. The vcpu's guest then runs from private memory the host never mapped.
 */
export async function launchPrivateGuest(vm: Vm, options: PrivateLaunchOptions): Promise<PrivateLaunch> {
  const op = 'launchPrivateGuest';
  if (!Vm.isVm(vm)) throw invalidArgument(op, 'vm must be a Vm');
  // Every option read once, here (a getter or Proxy cannot swap the pages between their check and their use).
  const o = readOptions(options, op, ['pages', 'vcpu', 'loader', 'staging', 'engine'], ['pages', 'vcpu', 'loader', 'staging']);
  const st = readOptions(o.staging, op, ['guestPhysAddr', 'memory', 'offset', 'size'], ['guestPhysAddr', 'memory', 'size'], 'staging');
  const runs = checkPages(o.pages as readonly LaunchPages[], op);
  const stagingGpa = toU64(st.guestPhysAddr as U64Like, 'staging.guestPhysAddr', op);
  const stagingOffset = toU64((st.offset ?? 0n) as U64Like, 'staging.offset', op);
  const stagingSize = toU64(st.size as U64Like, 'staging.size', op);
  if (!HostMemory.isHostMemory(st.memory)) throw invalidArgument(op, 'staging.memory must be a HostMemory');
  if (!Vcpu.isVcpu(o.vcpu)) throw invalidArgument(op, 'vcpu must be a Vcpu');
  const memory = st.memory;
  const vcpu = o.vcpu;
  const loader = o.loader as MailboxDriver;
  const engine = (o.engine ?? 'auto') as 'auto' | 'kernel' | 'software';
  for (const r of runs) {
    if (BigInt(r.data.length) > stagingSize) throw invalidArgument(op, 'a page run is larger than the staging buffer', { guestPhysAddr: r.gpa, length: r.data.length, stagingSize });
    const slot = vm.slotAt(r.gpa);
    if (!slot?.guestMemfd) throw new KvmError(`${op}: gpa 0x${r.gpa.toString(16)} is not in a guest_memfd slot`, { code: 'EINVAL', args: { guestPhysAddr: r.gpa } });
  }
  const measurement = measureLaunchPages(runs.map((r) => ({ guestPhysAddr: r.gpa, data: r.data })));
  const conversions: ConversionResult[] = [];
  const preFaults: PreFaultResult[] = [];
  let bytesLoaded = 0n;
  const staging = memory.view(stagingOffset, stagingSize);
  for (const r of runs) {
    const size = BigInt(r.data.length);
    conversions.push(convertMemory(vm, { guestPhysAddr: r.gpa, size, private: true, fallocate: true }));
    preFaults.push(await vcpu.preFaultMemory({ gpa: r.gpa, size }, { engine }));
    staging.set(r.data, 0);
    const answer = await loader.copy(r.gpa, size, stagingGpa);
    if (answer.status !== 0n) throw new KvmError(`${op}: the loader failed copying to 0x${r.gpa.toString(16)}`, { code: 'EIO', args: { guestPhysAddr: r.gpa } });
    bytesLoaded += size;
  }
  staging.fill(0);
  return { measurement, conversions, preFaults, bytesLoaded };
}
