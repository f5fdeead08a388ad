import { describe, expect, it } from 'vitest';
import { vmm } from '../../lib/index.js';

const at = new Date(Date.UTC(2026, 11, 1, 23, 45, 59));
const reg = (rtc: vmm.CmosRtc, index: number): number => {
  rtc.write(vmm.CMOS_INDEX_PORT, index | 0x80); // NMI-disable bit is not part of the index
  return rtc.read(vmm.CMOS_DATA_PORT);
};

describe('CmosRtc', () => {
  it('reports the given UTC time in BCD, 24-hour mode', () => {
    const rtc = new vmm.CmosRtc(() => at);
    expect([0, 2, 4, 6, 7, 8, 9, 0x32].map((i) => reg(rtc, i))).toEqual([0x59, 0x45, 0x23, 0x03, 0x01, 0x12, 0x26, 0x20]);
    expect(reg(rtc, 0x0b)).toBe(0x02);
  });

  it('never reports an update in progress and says the battery is good', () => {
    const rtc = new vmm.CmosRtc(() => at);
    expect(reg(rtc, 0x0a) & 0x80).toBe(0);
    rtc.write(vmm.CMOS_INDEX_PORT, 0x0a);
    rtc.write(vmm.CMOS_DATA_PORT, 0xa6);
    expect(reg(rtc, 0x0a)).toBe(0x26);
    expect(reg(rtc, 0x0d)).toBe(0x80);
  });

  it('keeps other bytes as CMOS memory', () => {
    const rtc = new vmm.CmosRtc(() => at);
    rtc.write(vmm.CMOS_INDEX_PORT, 0x40);
    rtc.write(vmm.CMOS_DATA_PORT, 0x5a);
    expect(reg(rtc, 0x40)).toBe(0x5a);
    expect(rtc.read(vmm.CMOS_INDEX_PORT)).toBe(0x40);
  });
});
