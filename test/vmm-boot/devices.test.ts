import { describe, expect, it } from 'vitest';
import { vmm } from '../../lib/index.js';

function uart(): { u: vmm.Uart16550; out: number[]; irqs: boolean[] } {
  const out: number[] = [];
  const irqs: boolean[] = [];
  const u = new vmm.Uart16550({ write: (b) => out.push(...b), irq: (level) => irqs.push(level) });
  return { u, out, irqs };
}

describe('Uart16550', () => {
  it('transmits THR writes to the sink on flush, with the transmitter always empty', () => {
    const { u, out } = uart();
    for (const c of 'hi\n') u.write(0, c.charCodeAt(0));
    expect(out).toEqual([]);
    u.flush();
    expect(String.fromCharCode(...out)).toBe('hi\n');
    expect(u.read(5) & 0x60).toBe(0x60); // THRE | TEMT
  });

  it("passes Linux's 8250 probe: scratch register, loopback MSR, FIFO bits", () => {
    const { u } = uart();
    u.write(7, 0xa5);
    expect(u.read(7)).toBe(0xa5);
    u.write(4, 0x10 | 0x0a); // loopback | OUT2 | RTS
    expect(u.read(6) & 0xf0).toBe(0x90);
    u.write(4, 0x10 | 0x1f & 0x0f);
    expect(u.read(6) & 0xf0).toBe(0xf0);
    u.write(2, 0x01); // FIFO enable
    expect(u.read(2) & 0xc0).toBe(0xc0);
  });

  it('loops transmitted bytes back to the receiver in loopback mode', () => {
    const { u, out } = uart();
    u.write(4, 0x10);
    u.write(0, 0x41);
    u.flush();
    expect(out).toEqual([]);
    expect(u.read(5) & 1).toBe(1);
    expect(u.read(0)).toBe(0x41);
    expect(u.read(5) & 1).toBe(0);
  });

  it('latches the divisor while DLAB is set', () => {
    const { u, out } = uart();
    u.write(3, 0x83);
    u.write(0, 0x01);
    u.write(1, 0x00);
    u.write(3, 0x03);
    expect(u.divisor).toBe(1);
    u.flush();
    expect(out).toEqual([]);
    expect(u.read(3)).toBe(3);
  });

  it('raises the THR-empty interrupt when enabled and clears it on an IIR read', () => {
    const { u, irqs } = uart();
    expect(u.read(2) & 0x0f).toBe(0x01); // no interrupt
    u.write(1, 0x02);
    expect(u.irqLevel).toBe(true);
    expect(u.read(2) & 0x0f).toBe(0x02);
    expect(u.irqLevel).toBe(false);
    u.write(0, 0x41); // transmitter empties again at once
    expect(u.irqLevel).toBe(true);
    u.write(1, 0);
    expect(u.irqLevel).toBe(false);
    expect(irqs).toEqual([true, false, true, false]);
  });

  it('receives input into the FIFO, with the data-ready interrupt taking priority', () => {
    const { u } = uart();
    u.write(1, 0x03);
    u.read(2); // clears THRI
    u.receive(new Uint8Array([1, 2]));
    expect(u.irqLevel).toBe(true);
    expect(u.read(2) & 0x0f).toBe(0x04);
    expect(u.read(0)).toBe(1);
    expect(u.read(0)).toBe(2);
    expect(u.read(5) & 1).toBe(0);
    expect(u.read(0)).toBe(0);
  });

  it('reports an overrun when the FIFO is full, and FCR clears it', () => {
    const { u } = uart();
    u.receive(new Uint8Array(5000));
    expect(u.read(5) & 0x02).toBe(0x02);
    expect(u.read(5) & 0x02).toBe(0); // cleared by the read
    u.write(2, 0x03);
    expect(u.read(5) & 1).toBe(0);
  });
});

describe('I8042', () => {
  it('passes the self-test and reads back its configuration', () => {
    const k = new vmm.I8042(() => {});
    expect(k.read(0x64) & 1).toBe(0);
    k.write(0x64, 0xaa);
    expect(k.read(0x64) & 1).toBe(1);
    expect(k.read(0x60)).toBe(0x55);
    k.write(0x64, 0x60);
    k.write(0x60, 0x12);
    k.write(0x64, 0x20);
    expect(k.read(0x60)).toBe(0x12);
  });

  it('command 0xFE pulls the reset line', () => {
    let resets = 0;
    const k = new vmm.I8042(() => resets++);
    k.write(0x64, 0xfe);
    expect(resets).toBe(1);
    expect(k.resetRequested).toBe(true);
  });

  it('writing the output port with bit 0 clear resets; with it set does not', () => {
    let resets = 0;
    const k = new vmm.I8042(() => resets++);
    k.write(0x64, 0xd1);
    k.write(0x60, 0x01);
    expect(resets).toBe(0);
    k.write(0x64, 0xd1);
    k.write(0x60, 0x00);
    expect(resets).toBe(1);
    k.write(0x60, 0x00); // a plain data byte is not an output-port write
    expect(resets).toBe(1);
  });
});

describe('IoBus', () => {
  it('dispatches to devices by port and answers unclaimed ports with all ones', () => {
    const bus = new vmm.IoBus();
    const seen: [number, number, number][] = [];
    bus.add(0x3f8, 8, 'com1', { read: (o) => 0x40 + o, write: (o, s, v) => seen.push([o, s, v]) });
    bus.addSilent();
    expect(bus.read(0x3fd, 1)).toBe(0x45);
    bus.write(0x3f8, 1, 0x41);
    expect(seen).toEqual([[0, 1, 0x41]]);
    expect(bus.read(0x1234, 2)).toBe(0xffff);
    expect(bus.read(0x1234, 4)).toBe(0xffffffff);
    expect(bus.read(0x80, 1)).toBe(0xff);
    expect(bus.unclaimed.get(0x1234)).toBe(2);
    expect(bus.unclaimed.has(0x80)).toBe(false);
    expect(() => bus.add(0x3fc, 2, 'clash', { read: () => 0, write: () => {} })).toThrow(/overlap/);
  });

  it('performs string I/O: OUT reads each item of data, IN fills each', () => {
    const bus = new vmm.IoBus();
    const written: number[] = [];
    let next = 0x10;
    bus.add(0x100, 1, 'dev', { read: () => next++, write: (_o, _s, v) => written.push(v) });
    const data = new Uint8Array([0x34, 0x12, 0x78, 0x56]);
    vmm.dispatchIo(bus, { direction: 'out', size: 2, port: 0x100, count: 2, data });
    expect(written).toEqual([0x1234, 0x5678]);
    const into = new Uint8Array(3);
    vmm.dispatchIo(bus, { direction: 'in', size: 1, port: 0x100, count: 3, data: into });
    expect([...into]).toEqual([0x10, 0x11, 0x12]);
  });
});

describe('ConsoleWatcher', () => {
  it('reports the marker (even without a newline), panics and the power-down line once each', () => {
    const events: string[] = [];
    const out: number[] = [];
    const w = new vmm.ConsoleWatcher({ marker: 'MARK', output: { write: (b) => out.push(...b) }, onEvent: (e) => events.push(e) });
    const enc = new TextEncoder();
    w.write(enc.encode('boot\r\nMA'));
    w.write(enc.encode('RK'));
    w.write(enc.encode('\n[ 1.0] Kernel panic - not syncing: x\n'));
    w.write(enc.encode('[ 2.0] reboot: Power down\nMARK\n'));
    expect(events).toEqual(['marker', 'panic', 'power-down']);
    expect(w.bytes).toBe(out.length);
    expect(w.tail).toContain('Power down');
    expect(w.has('restart')).toBe(false);
  });
});
