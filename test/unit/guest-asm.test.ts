import { KvmError } from '../../lib/errors.js';
import { describe, it, expect } from 'vitest';
import { Asm, mem, type Condition } from '../../lib/guest/asm.js';

// Expected bytes were produced by GNU as 2.40 (`as --64 -msyntax=intel
// -mnaked-reg`) from the Intel-syntax text in the first column and then pasted
// here as literals, so the assembler is checked against an independent encoder.
// Where GNU as would pick a different but equivalent encoding (it does not
// shorten `mov rax, 5` without -O), the text names the encoding we expect, e.g.
// `mov eax, 5`.

type Case = [intel: string, build: (a: Asm) => unknown, hex: string];

function hex(bytes: Uint8Array): string {
  return [...bytes].map((b) => b.toString(16).padStart(2, '0')).join(' ');
}

function one(build: (a: Asm) => unknown): string {
  const a = new Asm();
  build(a);
  return hex(a.assemble(0n));
}

function table(cases: Case[]): void {
  for (const [intel, build, expected] of cases) {
    it(intel, () => {
      expect(one(build)).toBe(expected);
    });
  }
}

describe('mov reg, imm (shortest encoding)', () => {
  table([
    ['mov eax, 0', (a) => a.mov('rax', 0), 'b8 00 00 00 00'],
    ['mov eax, 0x12345678', (a) => a.mov('rax', 0x12345678), 'b8 78 56 34 12'],
    ['mov eax, 0xffffffff', (a) => a.mov('rax', 0xffffffff), 'b8 ff ff ff ff'],
    ['mov ecx, 0x80000000', (a) => a.mov('rcx', 0x80000000n), 'b9 00 00 00 80'],
    ['mov r8d, 1', (a) => a.mov('r8', 1), '41 b8 01 00 00 00'],
    ['mov r15d, 0x1000', (a) => a.mov('r15', 0x1000), '41 bf 00 10 00 00'],
    ['mov rax, -1', (a) => a.mov('rax', -1), '48 c7 c0 ff ff ff ff'],
    ['mov rax, -1 (unsigned spelling)', (a) => a.mov('rax', 0xffff_ffff_ffff_ffffn), '48 c7 c0 ff ff ff ff'],
    ['mov r15, -0x80000000', (a) => a.mov('r15', -0x80000000), '49 c7 c7 00 00 00 80'],
    ['mov rdx, -2', (a) => a.mov('rdx', -2n), '48 c7 c2 fe ff ff ff'],
    ['movabs rax, 0x100000000', (a) => a.mov('rax', 0x1_0000_0000n), '48 b8 00 00 00 00 01 00 00 00'],
    ['movabs r12, 0x123456789abcdef0', (a) => a.mov('r12', 0x1234_5678_9abc_def0n), '49 bc f0 de bc 9a 78 56 34 12'],
    ['movabs rbx, 0xffffffff7fffffff', (a) => a.mov('rbx', -0x8000_0001n), '48 bb ff ff ff 7f ff ff ff ff'],
    ['movabs rdi, 0x10000000000', (a) => a.mov('rdi', 1n << 40n), '48 bf 00 00 00 00 00 01 00 00'],
    ['mov eax, 0xffffffff (from -1)', (a) => a.mov('eax', -1), 'b8 ff ff ff ff'],
    ['mov r9d, 7', (a) => a.mov('r9d', 7), '41 b9 07 00 00 00'],
    ['mov ax, 0x1234', (a) => a.mov('ax', 0x1234), '66 b8 34 12'],
    ['mov r10w, 1', (a) => a.mov('r10w', 1), '66 41 ba 01 00'],
    ['mov al, 0xff', (a) => a.mov('al', 0xff), 'b0 ff'],
    ['mov sil, 1', (a) => a.mov('sil', 1), '40 b6 01'],
    ['mov r11b, 2', (a) => a.mov('r11b', 2), '41 b3 02'],
  ]);

  it('rejects immediates that do not fit', () => {
    expect(() => new Asm().mov('rax', 1n << 64n)).toThrow(KvmError);
    expect(() => new Asm().mov('rax', -(1n << 63n) - 1n)).toThrow(KvmError);
    expect(() => new Asm().mov('eax', 0x1_0000_0000)).toThrow(KvmError);
    expect(() => new Asm().mov('al', 256)).toThrow(KvmError);
    expect(() => new Asm().mov('al', -129)).toThrow(KvmError);
    expect(() => new Asm().mov('eax', 1.5)).toThrow(KvmError);
    expect(() => new Asm().mov('eax', Number.MAX_SAFE_INTEGER + 1)).toThrow(KvmError);
  });

  it('accepts the extreme 64-bit values', () => {
    expect(one((a) => a.mov('rax', -(1n << 63n)))).toBe('48 b8 00 00 00 00 00 00 00 80');
    expect(one((a) => a.mov('rax', (1n << 64n) - 2n))).toBe('48 c7 c0 fe ff ff ff');
  });
});

describe('mov reg, reg', () => {
  table([
    ['mov rax, rbx', (a) => a.mov('rax', 'rbx'), '48 89 d8'],
    ['mov r8, rax', (a) => a.mov('r8', 'rax'), '49 89 c0'],
    ['mov rax, r8', (a) => a.mov('rax', 'r8'), '4c 89 c0'],
    ['mov r15, r14', (a) => a.mov('r15', 'r14'), '4d 89 f7'],
    ['mov rsp, rbp', (a) => a.mov('rsp', 'rbp'), '48 89 ec'],
    ['mov eax, ebx', (a) => a.mov('eax', 'ebx'), '89 d8'],
    ['mov r8d, eax', (a) => a.mov('r8d', 'eax'), '41 89 c0'],
    ['mov ax, bx', (a) => a.mov('ax', 'bx'), '66 89 d8'],
    ['mov r9w, r10w', (a) => a.mov('r9w', 'r10w'), '66 45 89 d1'],
    ['mov al, bl', (a) => a.mov('al', 'bl'), '88 d8'],
    ['mov sil, al', (a) => a.mov('sil', 'al'), '40 88 c6'],
    ['mov al, dil', (a) => a.mov('al', 'dil'), '40 88 f8'],
    ['mov spl, bpl', (a) => a.mov('spl', 'bpl'), '40 88 ec'],
    ['mov r8b, r9b', (a) => a.mov('r8b', 'r9b'), '45 88 c8'],
  ]);

  it('rejects mixed widths and unknown registers', () => {
    expect(() => new Asm().mov('rax', 'ebx')).toThrow(KvmError);
    expect(() => new Asm().mov('al', 'ax')).toThrow(KvmError);
    // A JavaScript caller can pass anything; ah..bh are deliberately absent.
    expect(() => new Asm().mov('ah' as 'al', 'bl')).toThrow(/unknown register/);
  });
});

describe('loads: [base + index*scale + disp] addressing', () => {
  table([
    ['mov rax, [rbx]', (a) => a.load('rax', { base: 'rbx' }), '48 8b 03'],
    ['mov rax, [rsp]', (a) => a.load('rax', { base: 'rsp' }), '48 8b 04 24'],
    ['mov rax, [rbp]', (a) => a.load('rax', { base: 'rbp' }), '48 8b 45 00'],
    ['mov rax, [r12]', (a) => a.load('rax', { base: 'r12' }), '49 8b 04 24'],
    ['mov rax, [r13]', (a) => a.load('rax', { base: 'r13' }), '49 8b 45 00'],
    ['mov rax, [rbx+8]', (a) => a.load('rax', mem('rbx', 8)), '48 8b 43 08'],
    ['mov rax, [rbx+127]', (a) => a.load('rax', mem('rbx', 127)), '48 8b 43 7f'],
    ['mov rax, [rbx-128]', (a) => a.load('rax', mem('rbx', -128)), '48 8b 43 80'],
    ['mov rax, [rbx+128]', (a) => a.load('rax', mem('rbx', 128)), '48 8b 83 80 00 00 00'],
    ['mov rax, [rbx-129]', (a) => a.load('rax', mem('rbx', -129)), '48 8b 83 7f ff ff ff'],
    ['mov rax, [rsp+0x10]', (a) => a.load('rax', mem('rsp', 0x10)), '48 8b 44 24 10'],
    ['mov rax, [rsp+0x1000]', (a) => a.load('rax', mem('rsp', 0x1000)), '48 8b 84 24 00 10 00 00'],
    ['mov rax, [r12+0x1000]', (a) => a.load('rax', mem('r12', 0x1000)), '49 8b 84 24 00 10 00 00'],
    ['mov rax, [rbp-8]', (a) => a.load('rax', mem('rbp', -8)), '48 8b 45 f8'],
    ['mov rax, [r13+0x7fffffff]', (a) => a.load('rax', mem('r13', 0x7fffffff)), '49 8b 85 ff ff ff 7f'],
    ['mov rax, [rbx-0x80000000]', (a) => a.load('rax', mem('rbx', -0x80000000n)), '48 8b 83 00 00 00 80'],
    ['mov rax, [rbx+rcx]', (a) => a.load('rax', { base: 'rbx', index: 'rcx' }), '48 8b 04 0b'],
    ['mov rax, [rbx+rcx*2]', (a) => a.load('rax', { base: 'rbx', index: 'rcx', scale: 2 }), '48 8b 04 4b'],
    ['mov rax, [rbx+rcx*4]', (a) => a.load('rax', { base: 'rbx', index: 'rcx', scale: 4 }), '48 8b 04 8b'],
    ['mov rax, [rbx+rcx*8]', (a) => a.load('rax', { base: 'rbx', index: 'rcx', scale: 8 }), '48 8b 04 cb'],
    ['mov rax, [rbp+rcx*4]', (a) => a.load('rax', { base: 'rbp', index: 'rcx', scale: 4 }), '48 8b 44 8d 00'],
    ['mov rax, [r13+rcx*4]', (a) => a.load('rax', { base: 'r13', index: 'rcx', scale: 4 }), '49 8b 44 8d 00'],
    ['mov rax, [rsp+rcx]', (a) => a.load('rax', { base: 'rsp', index: 'rcx' }), '48 8b 04 0c'],
    ['mov rax, [r12+r12*2]', (a) => a.load('rax', { base: 'r12', index: 'r12', scale: 2 }), '4b 8b 04 64'],
    ['mov rax, [rbx+r12*8+0x10]', (a) => a.load('rax', { base: 'rbx', index: 'r12', scale: 8, disp: 0x10 }), '4a 8b 44 e3 10'],
    ['mov rax, [r8+r9*2+0x12345678]', (a) => a.load('rax', { base: 'r8', index: 'r9', scale: 2, disp: 0x12345678 }), '4b 8b 84 48 78 56 34 12'],
    ['mov rax, [rsp+rbp*8-1]', (a) => a.load('rax', { base: 'rsp', index: 'rbp', scale: 8, disp: -1 }), '48 8b 44 ec ff'],
    ['mov rax, [rcx*8+0x1000]', (a) => a.load('rax', { index: 'rcx', scale: 8, disp: 0x1000 }), '48 8b 04 cd 00 10 00 00'],
    ['mov rax, [r13*1+0]', (a) => a.load('rax', { index: 'r13' }), '4a 8b 04 2d 00 00 00 00'],
    ['mov rax, ds:0x1000', (a) => a.load('rax', { disp: 0x1000 }), '48 8b 04 25 00 10 00 00'],
    ['mov r9, [r10+r11*8]', (a) => a.load('r9', { base: 'r10', index: 'r11', scale: 8 }), '4f 8b 0c da'],
    ['mov r15, [r15]', (a) => a.load('r15', { base: 'r15' }), '4d 8b 3f'],
    ['mov eax, [rbx]', (a) => a.load('eax', { base: 'rbx' }), '8b 03'],
    ['mov r10d, [rsi+4]', (a) => a.load('r10d', mem('rsi', 4)), '44 8b 56 04'],
    ['mov ax, [rdi]', (a) => a.load('ax', { base: 'rdi' }), '66 8b 07'],
    ['mov r8w, [rax+rdx*2]', (a) => a.load('r8w', { base: 'rax', index: 'rdx', scale: 2 }), '66 44 8b 04 50'],
    ['mov al, [rsi]', (a) => a.load('al', { base: 'rsi' }), '8a 06'],
    ['mov dil, [rax]', (a) => a.load('dil', { base: 'rax' }), '40 8a 38'],
    ['mov r15b, [r13]', (a) => a.load('r15b', { base: 'r13' }), '45 8a 7d 00'],
    ['mov rax, [rbx] (via mov)', (a) => a.mov('rax', { base: 'rbx' }), '48 8b 03'],
    ['movzx eax, byte ptr [rsi]', (a) => a.loadZx('eax', { base: 'rsi' }, 8), '0f b6 06'],
    ['movzx r9, word ptr [r10+2]', (a) => a.loadZx('r9', mem('r10', 2), 16), '4d 0f b7 4a 02'],
    ['movzx eax, bl', (a) => a.movzx('eax', 'bl'), '0f b6 c3'],
    ['movzx rax, bl', (a) => a.movzx('rax', 'bl'), '48 0f b6 c3'],
    ['movzx r8d, sil', (a) => a.movzx('r8d', 'sil'), '44 0f b6 c6'],
    ['movzx eax, bx', (a) => a.movzx('eax', 'bx'), '0f b7 c3'],
  ]);

  it('rejects impossible operands', () => {
    expect(() => new Asm().load('rax', { base: 'rbx', index: 'rsp' as 'rax' })).toThrow(/rsp cannot be an index/);
    expect(() => new Asm().load('rax', { base: 'ebx' as 'rbx' })).toThrow(/base register must be 64-bit/);
    expect(() => new Asm().load('rax', mem('rbx', 0x8000_0000))).toThrow(KvmError);
    expect(() => new Asm().load('rax', mem('rbx', -0x8000_0001))).toThrow(KvmError);
    expect(() => new Asm().load('rax', { base: 'rbx', scale: 4 })).toThrow(/needs an index/);
    expect(() => new Asm().load('rax', { base: 'rbx', index: 'rcx', scale: 3 as 4 })).toThrow(KvmError);
    expect(() => new Asm().load('rax', { label: 'x', base: 'rbx' })).toThrow(/RIP-relative/);
    expect(() => new Asm().loadZx('ax', { base: 'rbx' }, 16)).toThrow(KvmError);
    expect(() => new Asm().movzx('ax', 'bx')).toThrow(KvmError);
  });
});

describe('stores', () => {
  table([
    ['mov [rbx], rax', (a) => a.store({ base: 'rbx' }, 'rax'), '48 89 03'],
    ['mov [rsp+8], r8', (a) => a.store(mem('rsp', 8), 'r8'), '4c 89 44 24 08'],
    ['mov [r13], edx', (a) => a.store({ base: 'r13' }, 'edx'), '41 89 55 00'],
    ['mov [rdi], ax', (a) => a.store({ base: 'rdi' }, 'ax'), '66 89 07'],
    ['mov [rsi+rcx], cl', (a) => a.store({ base: 'rsi', index: 'rcx' }, 'cl'), '88 0c 0e'],
    ['mov [rax], sil', (a) => a.store({ base: 'rax' }, 'sil'), '40 88 30'],
    ['mov [r12+rax*8-8], r11', (a) => a.store({ base: 'r12', index: 'rax', scale: 8, disp: -8 }, 'r11'), '4d 89 5c c4 f8'],
    ['mov [rbx], rbx (via mov)', (a) => a.mov({ base: 'rbx' }, 'rbx'), '48 89 1b'],
    ['mov byte ptr [rbx], 0x7f', (a) => a.storeImm({ base: 'rbx' }, 0x7f, 8), 'c6 03 7f'],
    ['mov byte ptr [r12], 0xff', (a) => a.storeImm({ base: 'r12' }, -1, 8), '41 c6 04 24 ff'],
    ['mov word ptr [rbx+2], 0x1234', (a) => a.storeImm(mem('rbx', 2), 0x1234, 16), '66 c7 43 02 34 12'],
    ['mov dword ptr [r12], 0xdeadbeef', (a) => a.storeImm({ base: 'r12' }, 0xdeadbeef, 32), '41 c7 04 24 ef be ad de'],
    ['mov qword ptr [rbp-8], -1', (a) => a.storeImm(mem('rbp', -8), -1, 64), '48 c7 45 f8 ff ff ff ff'],
    ['mov qword ptr [rax+rbx*8], 0x7fffffff', (a) => a.storeImm({ base: 'rax', index: 'rbx', scale: 8 }, 0x7fffffff, 64), '48 c7 04 d8 ff ff ff 7f'],
    ['mov qword ptr [r13+0x100], -0x80000000', (a) => a.storeImm(mem('r13', 0x100), -0x80000000, 64), '49 c7 85 00 01 00 00 00 00 00 80'],
    ['mov byte ptr ds:0x2000, 1', (a) => a.storeImm({ disp: 0x2000 }, 1, 8), 'c6 04 25 00 20 00 00 01'],
  ]);

  it('rejects a 64-bit immediate that is not a sign-extended imm32', () => {
    expect(() => new Asm().storeImm({ base: 'rax' }, 0x8000_0000, 64)).toThrow(KvmError);
    expect(() => new Asm().storeImm({ base: 'rax' }, 0x1_0000_0000n, 64)).toThrow(KvmError);
    expect(() => new Asm().storeImm({ base: 'rax' }, 256, 8)).toThrow(KvmError);
    // 0xffff_ffff_8000_0000 is the unsigned spelling of -2^31: representable.
    expect(one((a) => a.storeImm({ base: 'rax' }, 0xffff_ffff_8000_0000n, 64))).toBe('48 c7 00 00 00 00 80');
  });
});

describe('lea', () => {
  table([
    ['lea rax, [rbx+rcx*4+8]', (a) => a.lea('rax', { base: 'rbx', index: 'rcx', scale: 4, disp: 8 }), '48 8d 44 8b 08'],
    ['lea eax, [rdi+1]', (a) => a.lea('eax', mem('rdi', 1)), '8d 47 01'],
    ['lea r8, [r13]', (a) => a.lea('r8', { base: 'r13' }), '4d 8d 45 00'],
    ['lea rsp, [rsp-0x100]', (a) => a.lea('rsp', mem('rsp', -0x100)), '48 8d a4 24 00 ff ff ff'],
  ]);
});

describe('ALU', () => {
  table([
    ['add rax, rbx', (a) => a.add('rax', 'rbx'), '48 01 d8'],
    ['or rax, rbx', (a) => a.or('rax', 'rbx'), '48 09 d8'],
    ['adc rax, rbx', (a) => a.adc('rax', 'rbx'), '48 11 d8'],
    ['sbb rax, rbx', (a) => a.sbb('rax', 'rbx'), '48 19 d8'],
    ['and eax, ecx', (a) => a.and('eax', 'ecx'), '21 c8'],
    ['sub r8, r9', (a) => a.sub('r8', 'r9'), '4d 29 c8'],
    ['xor r15d, r15d', (a) => a.xor('r15d', 'r15d'), '45 31 ff'],
    ['cmp rsi, rdi', (a) => a.cmp('rsi', 'rdi'), '48 39 fe'],
    ['cmp r12, rax', (a) => a.cmp('r12', 'rax'), '49 39 c4'],
    ['or al, bl', (a) => a.or('al', 'bl'), '08 d8'],
    ['xor sil, dil', (a) => a.xor('sil', 'dil'), '40 30 fe'],
    ['add ax, r9w', (a) => a.add('ax', 'r9w'), '66 44 01 c8'],
    ['add rax, 1', (a) => a.add('rax', 1), '48 83 c0 01'],
    ['add rax, -128', (a) => a.add('rax', -128), '48 83 c0 80'],
    ['add rax, 127', (a) => a.add('rax', 127), '48 83 c0 7f'],
    ['add rax, 128', (a) => a.add('rax', 128), '48 05 80 00 00 00'],
    ['add rcx, 128', (a) => a.add('rcx', 128), '48 81 c1 80 00 00 00'],
    ['add rbx, 0x1000', (a) => a.add('rbx', 0x1000), '48 81 c3 00 10 00 00'],
    ['add r14, 0x1000', (a) => a.add('r14', 0x1000), '49 81 c6 00 10 00 00'],
    ['sub rsp, 0x1000', (a) => a.sub('rsp', 0x1000), '48 81 ec 00 10 00 00'],
    ['sub r9, 8', (a) => a.sub('r9', 8), '49 83 e9 08'],
    ['and rax, -4096', (a) => a.and('rax', -4096), '48 25 00 f0 ff ff'],
    ['and rax, -4096 (unsigned spelling)', (a) => a.and('rax', 0xffff_ffff_ffff_f000n), '48 25 00 f0 ff ff'],
    ['and eax, 0xffffffff', (a) => a.and('eax', 0xffffffff), '83 e0 ff'],
    ['cmp r12, 0x7fffffff', (a) => a.cmp('r12', 0x7fffffff), '49 81 fc ff ff ff 7f'],
    ['cmp rax, -0x80000000', (a) => a.cmp('rax', -0x80000000), '48 3d 00 00 00 80'],
    ['xor eax, 0x80000000', (a) => a.xor('eax', 0x80000000), '35 00 00 00 80'],
    ['or edi, 0x100', (a) => a.or('edi', 0x100), '81 cf 00 01 00 00'],
    ['or ax, 0x100', (a) => a.or('ax', 0x100), '66 0d 00 01'],
    ['or cx, 1', (a) => a.or('cx', 1), '66 83 c9 01'],
    ['and r10w, 0x1ff', (a) => a.and('r10w', 0x1ff), '66 41 81 e2 ff 01'],
    ['cmp al, 5', (a) => a.cmp('al', 5), '3c 05'],
    ['cmp bl, 0xff', (a) => a.cmp('bl', 0xff), '80 fb ff'],
    ['and sil, 0xf', (a) => a.and('sil', 0xf), '40 80 e6 0f'],
    ['cmp r9b, 1', (a) => a.cmp('r9b', 1), '41 80 f9 01'],
    ['add rax, [rbx]', (a) => a.add('rax', { base: 'rbx' }), '48 03 03'],
    ['cmp rax, [r12+8]', (a) => a.cmp('rax', mem('r12', 8)), '49 3b 44 24 08'],
    ['sub cl, [rbp]', (a) => a.sub('cl', { base: 'rbp' }), '2a 4d 00'],
    ['add [rbx], rax', (a) => a.add({ base: 'rbx' }, 'rax'), '48 01 03'],
    ['sub [rsp+8], ecx', (a) => a.sub(mem('rsp', 8), 'ecx'), '29 4c 24 08'],
    ['or [r9+r10*4], dl', (a) => a.or({ base: 'r9', index: 'r10', scale: 4 }, 'dl'), '43 08 14 91'],
    ['test rax, rax', (a) => a.test('rax', 'rax'), '48 85 c0'],
    ['test rbx, rcx', (a) => a.test('rbx', 'rcx'), '48 85 cb'],
    ['test r8d, r9d', (a) => a.test('r8d', 'r9d'), '45 85 c8'],
    ['test al, bl', (a) => a.test('al', 'bl'), '84 d8'],
    ['test eax, 1', (a) => a.test('eax', 1), 'a9 01 00 00 00'],
    ['test al, 1', (a) => a.test('al', 1), 'a8 01'],
    ['test ax, 0x8000', (a) => a.test('ax', 0x8000), '66 a9 00 80'],
    ['test rax, -1', (a) => a.test('rax', -1), '48 a9 ff ff ff ff'],
    ['test rcx, 0x100', (a) => a.test('rcx', 0x100), '48 f7 c1 00 01 00 00'],
    ['test r8b, 0x80', (a) => a.test('r8b', 0x80), '41 f6 c0 80'],
    ['test dil, 1', (a) => a.test('dil', 1), '40 f6 c7 01'],
    ['inc rax', (a) => a.inc('rax'), '48 ff c0'],
    ['dec rcx', (a) => a.dec('rcx'), '48 ff c9'],
    ['inc r12d', (a) => a.inc('r12d'), '41 ff c4'],
    ['dec r15', (a) => a.dec('r15'), '49 ff cf'],
    ['dec al', (a) => a.dec('al'), 'fe c8'],
    ['inc sil', (a) => a.inc('sil'), '40 fe c6'],
    ['dec ax', (a) => a.dec('ax'), '66 ff c8'],
    ['not rax', (a) => a.not('rax'), '48 f7 d0'],
    ['neg r9', (a) => a.neg('r9'), '49 f7 d9'],
    ['imul rax, rbx', (a) => a.imul('rax', 'rbx'), '48 0f af c3'],
    ['imul r8d, [rsi]', (a) => a.imul('r8d', { base: 'rsi' }), '44 0f af 06'],
    ['shl rax, 1', (a) => a.shl('rax', 1), '48 d1 e0'],
    ['shl rax, 12', (a) => a.shl('rax', 12), '48 c1 e0 0c'],
    ['shl rax, 63', (a) => a.shl('rax', 63), '48 c1 e0 3f'],
    ['shr r9, 3', (a) => a.shr('r9', 3), '49 c1 e9 03'],
    ['sar eax, 31', (a) => a.sar('eax', 31), 'c1 f8 1f'],
    ['shl al, 2', (a) => a.shl('al', 2), 'c0 e0 02'],
    ['shr rdx, cl', (a) => a.shr('rdx', 'cl'), '48 d3 ea'],
    ['shl sil, 1', (a) => a.shl('sil', 1), '40 d0 e6'],
    ['shr r12w, 4', (a) => a.shr('r12w', 4), '66 41 c1 ec 04'],
  ]);

  it('rejects immediates outside the instruction forms', () => {
    expect(() => new Asm().add('rax', 0x8000_0000)).toThrow(KvmError);
    expect(() => new Asm().and('rax', 0xffff_ffff)).toThrow(KvmError);
    expect(() => new Asm().cmp('al', 0x100)).toThrow(KvmError);
    expect(() => new Asm().test('rax', 0x8000_0000)).toThrow(KvmError);
    expect(() => new Asm().shl('rax', 64)).toThrow(KvmError);
    expect(() => new Asm().shl('eax', 32)).toThrow(KvmError);
    expect(() => new Asm().add('rax', 'ecx')).toThrow(KvmError);
  });
});

describe('stack, indirect branches, port I/O, misc', () => {
  table([
    ['push rax', (a) => a.push('rax'), '50'],
    ['push r15', (a) => a.push('r15'), '41 57'],
    ['pop rbx', (a) => a.pop('rbx'), '5b'],
    ['pop r8', (a) => a.pop('r8'), '41 58'],
    ['push 1', (a) => a.push(1), '6a 01'],
    ['push -1', (a) => a.push(-1), '6a ff'],
    ['push 0x1000', (a) => a.push(0x1000), '68 00 10 00 00'],
    ['jmp rax', (a) => a.jmpReg('rax'), 'ff e0'],
    ['jmp r11', (a) => a.jmpReg('r11'), '41 ff e3'],
    ['call rbx', (a) => a.callReg('rbx'), 'ff d3'],
    ['call r12', (a) => a.callReg('r12'), '41 ff d4'],
    ['out dx, al', (a) => a.out('dx', 'al'), 'ee'],
    ['out dx, ax', (a) => a.out('dx', 'ax'), '66 ef'],
    ['out dx, eax', (a) => a.out('dx', 'eax'), 'ef'],
    ['out 0x80, al', (a) => a.out(0x80, 'al'), 'e6 80'],
    ['out 0x80, ax', (a) => a.out(0x80, 'ax'), '66 e7 80'],
    ['out 0xe9, eax', (a) => a.out(0xe9, 'eax'), 'e7 e9'],
    ['in al, dx', (a) => a.in('al', 'dx'), 'ec'],
    ['in ax, dx', (a) => a.in('ax', 'dx'), '66 ed'],
    ['in eax, dx', (a) => a.in('eax', 'dx'), 'ed'],
    ['in al, 0x60', (a) => a.in('al', 0x60), 'e4 60'],
    ['in eax, 0x71', (a) => a.in('eax', 0x71), 'e5 71'],
    ['nop', (a) => a.nop(), '90'],
    ['hlt', (a) => a.hlt(), 'f4'],
    ['pause', (a) => a.pause(), 'f3 90'],
    ['ret', (a) => a.ret(), 'c3'],
    ['ud2', (a) => a.ud2(), '0f 0b'],
    ['int3', (a) => a.int3(), 'cc'],
    ['cpuid', (a) => a.cpuid(), '0f a2'],
    ['rdtsc', (a) => a.rdtsc(), '0f 31'],
    ['mfence', (a) => a.mfence(), '0f ae f0'],
  ]);

  it('rejects bad port operands', () => {
    expect(() => new Asm().out(256, 'al')).toThrow(KvmError);
    expect(() => new Asm().out('dx', 'rax' as 'eax')).toThrow(KvmError);
    expect(() => new Asm().in('bl' as 'al', 'dx')).toThrow(KvmError);
    expect(() => new Asm().push('eax' as 'rax')).toThrow(KvmError);
  });
});

describe('data emission', () => {
  it('writes little-endian values and strings', () => {
    const a = new Asm().u8(0xff).u8(-1).u16(0x1234).u32(0xdeadbeef).u64(-2n).bytes([1, 2, 3]).asciz('hi').ascii('ok');
    expect(hex(a.assemble(0n))).toBe(
      'ff ff 34 12 ef be ad de fe ff ff ff ff ff ff ff 01 02 03 68 69 00 6f 6b',
    );
  });

  it('rejects out-of-range data', () => {
    expect(() => new Asm().u8(256)).toThrow(KvmError);
    expect(() => new Asm().u16(-0x8001)).toThrow(KvmError);
    expect(() => new Asm().bytes([0, 300])).toThrow(KvmError);
  });

  it('u64Label emits the absolute address of a label at the link origin', () => {
    const a = new Asm().u64Label('x').u64Label('x', 8).label('x').u8(0x90);
    expect(hex(a.assemble(0x1_0000_0000n))).toBe(
      '10 00 00 00 01 00 00 00 18 00 00 00 01 00 00 00 90',
    );
  });

  it('align pads relative to the origin', () => {
    const a = new Asm().u8(1).align(8).u8(2).align(4, 0);
    expect(hex(a.assemble(0n))).toBe('01 90 90 90 90 90 90 90 02 00 00 00');
    // At origin 4 the first pad only needs 3 bytes to reach address 8.
    expect(hex(a.assemble(4n))).toBe('01 90 90 90 02 00 00 00');
    expect(() => new Asm().align(3)).toThrow(KvmError);
  });
});

interface Program {
  name: string;
  gas: string;
  build: (a: Asm) => unknown;
  hex: string;
}

const CONDS: Condition[] = ['o', 'no', 'b', 'ae', 'e', 'ne', 'be', 'a', 's', 'ns', 'p', 'np', 'l', 'ge', 'le', 'g'];

// Programs with labels. `gas` is the same program for GNU as; `{disp32}` forces
// the rel32 form where our builder is told 'near'.
const programs: Program[] = [
  {
    name: 'backward short jmp',
    gas: `
L: nop
   jmp L`,
    build: (a) => a.label('L').nop().jmp('L'),
    hex: '90 eb fd',
  },
  {
    name: 'forward short jmp',
    gas: `
   jmp L
   nop
L: ret`,
    build: (a) => a.jmp('L').nop().label('L').ret(),
    hex: 'eb 01 90 c3',
  },
  {
    name: 'jcc with all 16 conditions, short, backward',
    gas: `
L:
   jo L
   jno L
   jb L
   jae L
   je L
   jne L
   jbe L
   ja L
   js L
   jns L
   jp L
   jnp L
   jl L
   jge L
   jle L
   jg L`,
    build: (a) => {
      a.label('L');
      for (const c of CONDS) a.jcc(c, 'L');
    },
    hex: '70 fe 71 fc 72 fa 73 f8 74 f6 75 f4 76 f2 77 f0 78 ee 79 ec 7a ea 7b e8 7c e6 7d e4 7e e2 7f e0',
  },
  {
    name: 'jcc with all 16 conditions, near, forward',
    gas: `
   {disp32} jo L
   {disp32} jno L
   {disp32} jb L
   {disp32} jae L
   {disp32} je L
   {disp32} jne L
   {disp32} jbe L
   {disp32} ja L
   {disp32} js L
   {disp32} jns L
   {disp32} jp L
   {disp32} jnp L
   {disp32} jl L
   {disp32} jge L
   {disp32} jle L
   {disp32} jg L
L: ret`,
    build: (a) => {
      for (const c of CONDS) a.jcc(c, 'L', 'near');
      a.label('L').ret();
    },
    hex: '0f 80 5a 00 00 00 0f 81 54 00 00 00 0f 82 4e 00 00 00 0f 83 48 00 00 00 0f 84 42 00 00 00 0f 85 3c 00 00 00 0f 86 36 00 00 00 0f 87 30 00 00 00 0f 88 2a 00 00 00 0f 89 24 00 00 00 0f 8a 1e 00 00 00 0f 8b 18 00 00 00 0f 8c 12 00 00 00 0f 8d 0c 00 00 00 0f 8e 06 00 00 00 0f 8f 00 00 00 00 c3',
  },
  {
    name: 'condition aliases',
    gas: `
L: jz L
   jnz L
   jc L
   jnc L
   jna L
   jnbe L
   jpe L
   jpo L
   jnge L
   jnl L
   jng L
   jnle L`,
    build: (a) => {
      a.label('L').jz('L').jnz('L');
      for (const c of ['c', 'nc', 'na', 'nbe', 'pe', 'po', 'nge', 'nl', 'ng', 'nle'] as const) a.jcc(c, 'L');
    },
    hex: '74 fe 75 fc 72 fa 73 f8 76 f6 77 f4 7a f2 7b f0 7c ee 7d ec 7e ea 7f e8',
  },
  {
    name: 'forced near jmp, both directions',
    gas: `
L: {disp32} jmp M
   nop
M: {disp32} jmp L`,
    build: (a) => a.label('L').jmp('M', 'near').nop().label('M').jmp('L', 'near'),
    hex: 'e9 01 00 00 00 90 e9 f5 ff ff ff',
  },
  {
    name: 'call forward and backward',
    gas: `
F: ret
   call F
   call G
   nop
G: ret`,
    build: (a) => a.label('F').ret().call('F').call('G').nop().label('G').ret(),
    hex: 'c3 e8 fa ff ff ff e8 01 00 00 00 90 c3',
  },
  {
    name: 'counted loop with decJnz',
    gas: `
   mov ecx, 10
top:
   add rax, rcx
   dec rcx
   jnz top
   ret`,
    build: (a) => a.mov('rcx', 10).label('top').add('rax', 'rcx').decJnz('rcx', 'top').ret(),
    hex: 'b9 0a 00 00 00 48 01 c8 48 ff c9 75 f8 c3',
  },
  {
    name: 'RIP-relative lea, load, store and store-immediate to labels',
    gas: `
   lea rdi, [rip+msg]
   mov rax, [rip+val]
   mov [rip+val+8], r9
   mov dword ptr [rip+val], 5
   mov qword ptr [rip+back], -1
back:
   ret
msg: .asciz "hi"
val: .quad 0x1122334455667788`,
    build: (a) =>
      a
        .lea('rdi', { label: 'msg' })
        .load('rax', { label: 'val' })
        .store({ label: 'val', disp: 8 }, 'r9')
        .storeImm({ label: 'val' }, 5, 32)
        .storeImm({ label: 'back' }, -1, 64)
        .label('back')
        .ret()
        .label('msg')
        .asciz('hi')
        .label('val')
        .u64(0x1122334455667788n),
    hex: '48 8d 3d 24 00 00 00 48 8b 05 20 00 00 00 4c 89 0d 21 00 00 00 c7 05 0f 00 00 00 05 00 00 00 48 c7 05 00 00 00 00 ff ff ff ff c3 68 69 00 88 77 66 55 44 33 22 11',
  },
];

describe('labels and branches', () => {
  for (const p of programs) {
    it(p.name, () => {
      expect(one(p.build)).toBe(p.hex);
    });
  }

  it('picks rel8 up to 127 bytes forward and rel32 beyond', () => {
    const fwd = (n: number) => new Asm().jmp('L').nop(n).label('L').assemble(0n);
    expect(hex(fwd(127).subarray(0, 2))).toBe('eb 7f');
    expect(fwd(127).length).toBe(129);
    expect(hex(fwd(128).subarray(0, 5))).toBe('e9 80 00 00 00');
    expect(fwd(128).length).toBe(133);
  });

  it('picks rel8 down to -128 bytes backward and rel32 beyond', () => {
    const back = (n: number) => new Asm().label('L').nop(n).jmp('L').assemble(0n);
    expect(hex(back(126).subarray(126))).toBe('eb 80');
    // 127 nops + 2 bytes of jmp would need -129: rel32 from the end of a 5-byte jmp.
    expect(hex(back(127).subarray(127))).toBe('e9 7c ff ff ff');
    const jccBack = new Asm().label('L').nop(127).jne('L').assemble(0n);
    expect(hex(jccBack.subarray(127))).toBe('0f 85 7b ff ff ff');
  });

  it('widening one branch can push another out of rel8 range', () => {
    // A jumps over B and 124 nops: 2 + 124 = 126 bytes if B is short. B's target
    // is 130 bytes away, so B becomes near (+3 bytes), and then A no longer fits.
    const a = new Asm().jmp('A').jmp('B').nop(124).label('A').nop(6).label('B').ret();
    const code = a.assemble(0n);
    expect(hex(code.subarray(0, 10))).toBe('e9 81 00 00 00 e9 82 00 00 00');
    expect(code.length).toBe(5 + 5 + 124 + 6 + 1);
  });

  it("branches: 'near' option makes every branch rel32", () => {
    const code = new Asm({ branches: 'near' }).label('L').je('L').jmp('L').assemble(0n);
    expect(hex(code)).toBe('0f 84 fa ff ff ff e9 f5 ff ff ff');
    // An explicit width still wins.
    expect(hex(new Asm({ branches: 'near' }).label('L').jmp('L', 'short').assemble(0n))).toBe('eb fe');
  });

  it('link returns label addresses at the origin and is repeatable', () => {
    const a = new Asm().label('start').nop(3).label('mid').jmp('start').label('end');
    const l1 = a.link(0x40_0000n);
    expect(l1.origin).toBe(0x40_0000n);
    expect(l1.labels.get('start')).toBe(0x40_0000n);
    expect(l1.labels.get('mid')).toBe(0x40_0003n);
    expect(l1.labels.get('end')).toBe(0x40_0005n);
    const l2 = a.link(0n);
    expect(hex(l2.code)).toBe(hex(l1.code));
    expect(a.link(0x1000).labels.get('end')).toBe(0x1005n);
  });

  it('errors on undefined labels, duplicates and out-of-range short branches', () => {
    expect(() => new Asm().jmp('nowhere').assemble(0n)).toThrow(/undefined label.*"nowhere"/);
    expect(() => new Asm().lea('rax', { label: 'gone' }).assemble(0n)).toThrow(/undefined label.*"gone"/);
    expect(() => new Asm().u64Label('x').assemble(0n)).toThrow(/undefined label/);
    expect(() => new Asm().label('a').nop().label('a')).toThrow(/duplicate label "a"/);
    expect(() => new Asm().jmp('L', 'short').nop(200).label('L').assemble(0n)).toThrow(/out of rel8 range/);
    expect(() => new Asm().label('')).toThrow(KvmError);
    expect(() => new Asm().jcc('xx' as Condition, 'L')).toThrow(/unknown condition/);
  });

  it('newLabel gives unique private names', () => {
    const a = new Asm();
    const x = a.newLabel('loop');
    a.label(x);
    const y = a.newLabel('loop');
    expect(x).not.toBe(y);
    expect(x.startsWith('.')).toBe(true);
    a.label(y).jmp(x);
    expect(a.hasLabel(x) && a.hasLabel(y)).toBe(true);
    expect(hex(a.assemble(0n))).toBe('eb fe');
  });
});

describe('assembler errors', () => {
  it('are KvmErrors with code EINVAL, like every node-kvm failure', () => {
    for (const bad of [() => new Asm().mov('al', 256), () => new Asm().label(''), () => new Asm().jmp('nowhere').assemble(0n)]) {
      const e = (() => { try { bad(); } catch (err) { return err; } })();
      expect(e).toBeInstanceOf(KvmError);
      expect((e as KvmError).code).toBe('EINVAL');
    }
  });
});
