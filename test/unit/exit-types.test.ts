// Type-level checks: `npm run typecheck` compiles this file, so a VcpuExit
// that stops narrowing on `reason` fails the build; vitest runs the
// expectTypeOf assertions (which are no-ops at run time) too.
import { describe, expectTypeOf, it } from 'vitest';
import type { IoExit, MmioExit, RdmsrExit, VcpuExit, VcpuExitReason, WrmsrExit } from '../../lib/exit.js';

function portOf(exit: VcpuExit): number | undefined {
  // Narrowing without a cast: this is what the issue asks for.
  if (exit.reason === 'io') return exit.port;
  return undefined;
}

function handle(exit: VcpuExit): void {
  switch (exit.reason) {
    case 'io':
      expectTypeOf(exit).toEqualTypeOf<IoExit>();
      expectTypeOf(exit.data).toEqualTypeOf<Uint8Array>();
      break;
    case 'mmio':
      expectTypeOf(exit).toEqualTypeOf<MmioExit>();
      expectTypeOf(exit.physAddr).toEqualTypeOf<bigint>();
      break;
    case 'x86-rdmsr':
      expectTypeOf(exit).toEqualTypeOf<RdmsrExit>();
      expectTypeOf(exit.reply).parameter(0).toEqualTypeOf<bigint | number>();
      break;
    case 'x86-wrmsr':
      expectTypeOf(exit).toEqualTypeOf<WrmsrExit>();
      expectTypeOf(exit.data).toEqualTypeOf<bigint>();
      break;
    case 'memory-fault':
      expectTypeOf(exit).toMatchTypeOf<{ gpa: bigint; size: bigint; private: boolean; flags: bigint }>();
      break;
    case 'unknown':
      expectTypeOf(exit.code).toEqualTypeOf<number>();
      break;
    case 'hyperv':
      if (exit.type === 'hcall') expectTypeOf(exit.setResult).toBeFunction();
      break;
    default:
      break;
  }
  // @ts-expect-error `port` exists only on the io exit, so it is not on the union.
  void exit.port;
}

describe('VcpuExit types', () => {
  it('narrows on reason', () => {
    expectTypeOf(portOf).returns.toEqualTypeOf<number | undefined>();
    expectTypeOf(handle).toBeFunction();
    // `reason` is a union of literals, not string: a typo is a compile error.
    expectTypeOf<VcpuExitReason>().not.toEqualTypeOf<string>();
    expectTypeOf<'io'>().toMatchTypeOf<VcpuExitReason>();
    expectTypeOf<'x86-rdmsr'>().toMatchTypeOf<VcpuExitReason>();
    // @ts-expect-error not an exit reason
    expectTypeOf<'unknown-5'>().toMatchTypeOf<VcpuExitReason>();
  });
});
