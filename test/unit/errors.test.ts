import { describe, expect, it } from 'vitest';
import { callNative, errnoCode, errnoError, invalidArgument, KvmError, toKvmError } from '../../lib/errors.js';
import { toU32, toU64 } from '../../lib/int.js';

describe('KvmError', () => {
  it('maps errno numbers to names and back', () => {
    expect(errnoCode(22)).toBe('EINVAL');
    expect(errnoCode(95)).toBe('EOPNOTSUPP');
    expect(errnoCode(99999)).toBe('E99999');
  });

  it('carries code, errno, syscall, ioctl and args', () => {
    const e = errnoError(2, 'KVM_PRE_FAULT_MEMORY', { gpa: 0x1000n, size: 4096n });
    expect(e).toBeInstanceOf(KvmError);
    expect(e).toBeInstanceOf(Error);
    expect(e).toMatchObject({ code: 'ENOENT', errno: 2, syscall: 'ioctl', ioctl: 'KVM_PRE_FAULT_MEMORY', name: 'KvmError' });
    expect(e.args).toEqual({ gpa: 0x1000n, size: 4096n });
    expect(e.message).toContain('gpa=0x1000');
  });

  it('uses the syscall name for non-ioctl failures', () => {
    const e = errnoError(12, 'madvise', {}, 'madvise');
    expect(e).toMatchObject({ syscall: 'madvise', ioctl: undefined, code: 'ENOMEM' });
  });

  it('converts native errno errors and argument errors', () => {
    const native = Object.assign(new Error('x'), { errno: 9, syscall: 'ioctl', op: 'KVM_RUN' });
    expect(toKvmError(native, 'KVM_RUN', {})).toMatchObject({ code: 'EBADF', ioctl: 'KVM_RUN' });
    expect(toKvmError(new TypeError('bad'), 'KVM_RUN', {})).toMatchObject({ code: 'EINVAL', errno: 22 });
    expect(() => callNative('KVM_RUN', {}, () => { throw native; })).toThrow(KvmError);
  });

  it('validation errors name the operation', () => {
    const e = invalidArgument('KVM_SET_USER_MEMORY_REGION2', 'nope', { slot: 3 }, 'EEXIST');
    expect(e).toMatchObject({ code: 'EEXIST', errno: 17, ioctl: 'KVM_SET_USER_MEMORY_REGION2' });
  });
});

describe('integer arguments', () => {
  it('accepts safe numbers and u64 bigints', () => {
    expect(toU64(0, 'x', 'op')).toBe(0n);
    expect(toU64(2 ** 53 - 1, 'x', 'op')).toBe(2n ** 53n - 1n);
    expect(toU64((1n << 64n) - 1n, 'x', 'op')).toBe((1n << 64n) - 1n);
    expect(toU32(7n, 'x', 'op')).toBe(7);
  });

  it.each([-1, 1.5, Number.NaN, Infinity, 2 ** 53, -1n, 1n << 64n, '1', null, undefined, {}])('rejects %s', (v) => {
    expect(() => toU64(v, 'x', 'op')).toThrow(KvmError);
  });

  it.each([-1, 2 ** 32, 0.5, 'a'])('rejects u32 %s', (v) => {
    expect(() => toU32(v, 'x', 'op')).toThrow(KvmError);
  });
});
