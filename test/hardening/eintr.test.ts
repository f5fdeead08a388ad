/**
 * GuestMemfd.allocate() used to fail with EINTR whenever a child process
 * exited during it: Node handles SIGCHLD, so the signal interrupts the
 * fallocate() on the main thread. What was allocated stays allocated, so the
 * library retries (bounded), as populate and pre-fault do. The raw addon
 * call in the same situation shows that the EINTRs really happen.
 */
import { expect, it } from 'vitest';
import { describeGuestMemfd } from '../support/kvm.js';
import { runNodeChild } from './support/child.js';

describeGuestMemfd('EINTR from SIGCHLD during GuestMemfd.allocate()', () => {
  it('allocate() and allocateAsync() succeed while children exit; the raw fallocate() sees EINTR', async (ctx) => {
    const r = await runNodeChild(`
const { Kvm, native, KvmError } = await import(BUNDLE);
const { spawn } = await import('node:child_process');
const kvm = Kvm.open();
const vm = kvm.createVm();
const size = 32n << 20n;
const gmem = vm.createGuestMemfd({ size });
const out = { rawEintr: 0, rawOk: 0, sync: 0, async: 0, failures: [] };
const exited = [];
for (let round = 0; round < 60 && (out.rawEintr < 3 || out.sync < 10); round++) {
  // Children that exit at staggered times while the main thread is in fallocate().
  for (let i = 0; i < 4; i++) {
    const c = spawn('sleep', [String(0.005 + i * 0.01)], { stdio: 'ignore' });
    exited.push(new Promise((res) => c.on('exit', res)));
  }
  const t0 = Date.now();
  while (Date.now() - t0 < 60) {
    try { native.fallocate(gmem.fd, 0x01, 0n, size); out.rawOk++; } catch (e) { if (e.errno === 4) out.rawEintr++; else throw e; }
    gmem.punchHole(0n, size);
    try { gmem.allocate(0n, size); out.sync++; } catch (e) { out.failures.push(e instanceof KvmError ? e.code : String(e)); }
    gmem.punchHole(0n, size);
  }
  try { await gmem.allocateAsync(0n, size); out.async++; } catch (e) { out.failures.push('async ' + (e instanceof KvmError ? e.code : String(e))); }
  gmem.punchHole(0n, size);
}
await Promise.all(exited);
vm.close();
kvm.close();
console.log(JSON.stringify(out));
`);
    expect(r.code, r.stderr).toBe(0);
    const o = r.json as { rawEintr: number; rawOk: number; sync: number; async: number; failures: string[] };
    console.log(`raw fallocate: ${o.rawEintr} EINTR, ${o.rawOk} ok; allocate(): ${o.sync} ok; allocateAsync(): ${o.async} ok`);
    expect(o.failures).toEqual([]);
    expect(o.sync).toBeGreaterThanOrEqual(10);
    // Without an EINTR in the raw calls the check above proved nothing: say so.
    if (o.rawEintr === 0) ctx.skip('no EINTR could be provoked on this kernel (fallocate finished before any SIGCHLD)');
  }, 300_000);
});
