/** Small run-loop helpers for tests whose guests report values with `out dx, eax`. */
import type { Vcpu, VcpuExit } from '../../lib/index.js';
import { UCALL_PORT } from '../../lib/guest/index.js';

/** Runs until an exit that is not 'intr'. */
export function nextExit(vcpu: Vcpu): VcpuExit {
  for (;;) {
    const exit = vcpu.run();
    if (exit.reason !== 'intr') return exit;
  }
}

/** The value the guest reports with `out dx, eax` to the ucall port. */
export function reportedValue(vcpu: Vcpu): number {
  const exit = nextExit(vcpu);
  if (exit.reason !== 'io' || exit.port !== UCALL_PORT || exit.direction !== 'out') throw new Error(`expected the report OUT, got ${exit.reason}`);
  return new DataView(exit.data.buffer, exit.data.byteOffset, 4).getUint32(0, true);
}
