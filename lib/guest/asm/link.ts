/**
 * The linker behind {@link Asm.link}: lays the program's items out for an
 * origin, picks each branch's width by relaxation and fills in every label
 * reference.
 *
 * @module
 */
import type { Asm } from '../asm.js';
import { guestArgumentError } from '../guest-error.js';
import type { Fixup } from './encoding.js';
import type { BranchWidth, Imm } from './operands.js';
import { fitWidth, fitsS32 } from './values.js';

/** Result of {@link Asm.link}. */
export interface LinkedProgram {
  /** The machine code and data, to be placed at `origin`. */
  code: Uint8Array;
  /** The address the code was linked for. */
  origin: bigint;
  /** Every label's absolute address (origin + offset). */
  labels: ReadonlyMap<string, bigint>;
}

/**
 * One piece of a program: encoded bytes (with their label fields), a label
 * definition, a branch whose width the linker picks, or alignment padding.
 */
export type Item =
  | { kind: 'bytes'; data: number[]; fixups: Fixup[] }
  | { kind: 'label'; name: string }
  | { kind: 'branch'; short: number[] | null; near: number[]; label: string; width: BranchWidth; useShort: boolean }
  | { kind: 'align'; alignment: number; fill: number };

/**
 * Resolve labels for `items` loaded at `origin` (see {@link Asm.link}); `defined`
 * holds every label the items define. Branch widths are chosen by relaxation:
 * every branch starts short where allowed and is widened while its
 * displacement does not fit; widening only grows the code, so the loop ends
 * after at most one pass per branch.
 */
export function linkItems(items: readonly Item[], defined: ReadonlySet<string>, origin: Imm): LinkedProgram {
  const org = fitWidth(origin, 64, 'origin').u;
  const undefinedLabels = new Set<string>();
  for (const it of items) {
    if (it.kind === 'branch' && !defined.has(it.label)) undefinedLabels.add(it.label);
    if (it.kind === 'bytes') for (const f of it.fixups) if (!defined.has(f.label)) undefinedLabels.add(f.label);
  }
  if (undefinedLabels.size > 0) {
    throw guestArgumentError(`undefined label(s): ${[...undefinedLabels].map((l) => `"${l}"`).join(', ')}`);
  }

  // Work on copies of the width decisions so link() can be called repeatedly
  // (e.g. at different origins, where alignment padding may differ).
  const useShort = items.map((it) => (it.kind === 'branch' ? it.useShort : false));
  let offsets: number[] = [];
  let labels = new Map<string, number>();
  let total = 0;
  for (;;) {
    offsets = [];
    labels = new Map();
    let pc = 0;
    items.forEach((it, i) => {
      offsets.push(pc);
      switch (it.kind) {
        case 'bytes':
          pc += it.data.length;
          break;
        case 'label':
          labels.set(it.name, pc);
          break;
        case 'branch':
          pc += useShort[i] ? it.short!.length + 1 : it.near.length + 4;
          break;
        case 'align': {
          const a = BigInt(it.alignment);
          const mis = Number((org + BigInt(pc)) % a);
          pc += mis === 0 ? 0 : it.alignment - mis;
          break;
        }
      }
    });
    total = pc;
    let changed = false;
    items.forEach((it, i) => {
      if (it.kind !== 'branch' || !useShort[i]) return;
      const end = offsets[i]! + it.short!.length + 1;
      const rel = labels.get(it.label)! - end;
      if (rel < -128 || rel > 127) {
        if (it.width === 'short') {
          throw guestArgumentError(`short branch to "${it.label}" is out of rel8 range (${rel} bytes)`);
        }
        useShort[i] = false;
        changed = true;
      }
    });
    if (!changed) break;
  }

  const code = new Uint8Array(total);
  const dv = new DataView(code.buffer);
  items.forEach((it, i) => {
    const at = offsets[i]!;
    switch (it.kind) {
      case 'bytes':
        code.set(it.data, at);
        for (const f of it.fixups) {
          const target = labels.get(f.label)!;
          if (f.kind === 'abs64') {
            dv.setBigUint64(at + f.at, BigInt.asUintN(64, org + BigInt(target) + f.addend), true);
          } else {
            const rel = BigInt(target - (at + f.end)) + f.addend;
            if (!fitsS32(rel)) throw guestArgumentError(`RIP-relative reference to "${f.label}" is out of range`);
            dv.setInt32(at + f.at, Number(rel), true);
          }
        }
        break;
      case 'branch': {
        const op = useShort[i] ? it.short! : it.near;
        code.set(op, at);
        const end = at + op.length + (useShort[i] ? 1 : 4);
        const rel = labels.get(it.label)! - end;
        if (useShort[i]) dv.setInt8(at + op.length, rel);
        else dv.setInt32(at + op.length, rel, true);
        break;
      }
      case 'align': {
        const next = i + 1 < offsets.length ? offsets[i + 1]! : total;
        code.fill(it.fill, at, next);
        break;
      }
      case 'label':
        break;
    }
  });
  const absLabels = new Map<string, bigint>();
  for (const [name, off] of labels) absLabels.set(name, BigInt.asUintN(64, org + BigInt(off)));
  return { code, origin: org, labels: absLabels };
}
