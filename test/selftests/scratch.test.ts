import { it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { Kvm, addonPath } from '../../lib/index.js';
import { Asm, Guest, emitUcallAbort, emitUcallDone, spinReadProgram } from '../../lib/guest/index.js';

it('scratch', async () => {
  using kvm = Kvm.open();
  console.log(JSON.stringify(kvm.capabilities()), addonPath());
  {
    using vm = kvm.createVm();
    const g = vm.createGuestMemfd({ size: 4096, flags: ['mmap', 'init-shared'] });
    const m = g.map();
    m.bytes.fill(0xaa);
    vm.setMemoryRegion({ slot: 1, guestPhysAddr: 1n << 32n, size: 4096, memory: m, guestMemfd: g });
    const a = new Asm();
    a.mov('rbx', 1n << 32n).mov('rcx', 4096);
    a.label('chk').loadZx('eax', { base: 'rbx' }, 8).cmp('eax', 0xaa).jne('bad').inc('rbx').decJnz('rcx', 'chk');
    a.mov('rbx', 1n << 32n).mov('rcx', 512).mov('rax', -1);
    a.label('wr').store({ base: 'rbx' }, 'rax').add('rbx', 8).decJnz('rcx', 'wr');
    emitUcallDone(a);
    a.label('bad');
    emitUcallAbort(a, { text: 'byte is not 0xaa' }, 'rax');
    const guest = Guest.create(vm, { program: a, map: [{ gpa: 0n, size: 2n << 20n, pageSize: '2m' }, { gpa: 1n << 32n, size: 4096n, pageSize: '4k' }] });
    await guest.runToDone();
    console.log('guest ok', m.bytes.every((b) => b === 0xff));
  }
  {
    using vm = kvm.createVm();
    const mem = vm.allocateMemory(2n << 20n);
    const dv = new DataView(mem.bytes.buffer);
    dv.setBigUint64(0, 0x1111n, true);
    vm.setMemoryRegion({ slot: 1, guestPhysAddr: 0xc0000000n, memory: mem });
    const guest = Guest.create(vm, { program: spinReadProgram({ gva: 0xc0000000n, heartbeatIterations: 1_000_000 }) });
    const ev = [];
    let t0 = performance.now();
    ev.push(await guest.run());
    let p = guest.run();
    setTimeout(() => dv.setBigUint64(0, 0x2222n, true), 5);
    ev.push(await p);
    console.log('hb', performance.now() - t0);
    p = guest.run();
    setTimeout(() => vm.moveMemoryRegion(1, 1n << 32n), 5);
    ev.push(await p);
    console.log(ev.map((e) => JSON.stringify(e, (k, v) => typeof v === 'bigint' ? v.toString(16) : v)));
  }
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write("x"); const b = new Uint8Array(4); process.kill(process.pid, "SIGBUS")']);
  console.log(r.status, r.signal, String(r.stdout));
});
