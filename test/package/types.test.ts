/**
 * The published types (.d.ts as `npm run build:ts` emits them, with
 * stripInternal) as a user's strict TypeScript sees them: objects that only
 * node-kvm makes (Vm, Vcpu, GuestMemfd, Device, Kvm, guest.Guest) cannot be
 * constructed or subclassed, while the factories and the public constructors
 * still type-check. Declarations are emitted in memory from lib/, so the
 * check never reads a stale dist/.
 *
 * Each line of the fixture that must fail ends in `// TSnnnn`; every other
 * line must type-check.
 */
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const root = resolve(import.meta.dirname, '../..');
// Never written to disk: the emitted declarations and the fixture live in memory
// under the package root, so its package.json ("type": "module") applies.
const virtualDir = join(root, '.types-check');
const distDir = join(virtualDir, 'dist');

function compilerOptions(extra: ts.CompilerOptions): ts.CompilerOptions {
  return {
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    lib: ['lib.es2023.d.ts', 'lib.esnext.disposable.d.ts'],
    strict: true,
    types: ['node'],
    ...extra,
  };
}

/** The .d.ts files of lib/, as the build emits them (stripInternal), by path under distDir. */
function emitDeclarations(): Map<string, string> {
  const build = ts.readConfigFile(join(root, 'tsconfig.build.json'), (p) => readFileSync(p, 'utf8'));
  expect(build.config?.compilerOptions?.stripInternal).toBe(true);
  const options = compilerOptions({ declaration: true, emitDeclarationOnly: true, stripInternal: true, skipLibCheck: true, rootDir: join(root, 'lib'), outDir: distDir });
  const files = new Map<string, string>();
  const program = ts.createProgram([join(root, 'lib/index.ts')], options);
  const result = program.emit(undefined, (name, text) => files.set(resolve(name), text));
  expect(result.diagnostics.map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n'))).toEqual([]);
  return files;
}

interface Finding {
  line: number;
  code: number;
  message: string;
}

/** A program of `source` (an .mts beside the emitted dist/) over the declarations. */
function programOf(declarations: Map<string, string>, source: string): { program: ts.Program; fixture: string } {
  const fixture = join(virtualDir, 'check.mts');
  const files = new Map(declarations).set(fixture, source);
  const options = compilerOptions({ noEmit: true, skipLibCheck: false });
  const host = ts.createCompilerHost(options);
  const { fileExists, readFile, getSourceFile, directoryExists } = host;
  const isVirtualDir = (p: string): boolean => [...files.keys()].some((f) => f.startsWith(resolve(p) + '/'));
  host.directoryExists = (p) => isVirtualDir(p) || (directoryExists?.call(host, p) ?? false);
  host.fileExists = (p) => files.has(resolve(p)) || fileExists.call(host, p);
  host.readFile = (p) => files.get(resolve(p)) ?? readFile.call(host, p);
  host.getSourceFile = (p, lang, ...rest) => {
    const text = files.get(resolve(p));
    return text !== undefined ? ts.createSourceFile(p, text, lang) : getSourceFile.call(host, p, lang, ...rest);
  };
  return { program: ts.createProgram([fixture], options, host), fixture };
}

/** Type-checks `source` (an .mts beside the emitted dist/) against the declarations; its diagnostics by line. */
function check(declarations: Map<string, string>, source: string): Finding[] {
  const { program, fixture } = programOf(declarations, source);
  return ts.getPreEmitDiagnostics(program).map((d) => {
    const where = d.file && d.start !== undefined ? d.file.getLineAndCharacterOfPosition(d.start).line + 1 : 0;
    const file = d.file ? d.file.fileName : '(global)';
    return { line: file === fixture ? where : -1, code: d.code, message: `${file}:${where} ${ts.flattenDiagnosticMessageText(d.messageText, ' ')}` };
  });
}

/** The `// TSnnnn` expectations of a fixture, by line. */
function expected(source: string): Map<number, number> {
  const out = new Map<number, number>();
  source.split('\n').forEach((text, i) => {
    const m = /\/\/ TS(\d+)\s*$/.exec(text);
    if (m) out.set(i + 1, Number(m[1]));
  });
  return out;
}

const FIXTURE = `
import { Kvm, Vm, Vcpu, GuestMemfd, Device, HostMemory, Userfault, EventFd, KvmError, guest } from './dist/index.js';

// What users do: factories, and the classes meant to be constructed.
export function allowed(): void {
  using kvm = Kvm.open();
  using vm: Vm = kvm.createVm();
  const vcpu: Vcpu = vm.createVcpu(0);
  const gmem: GuestMemfd | undefined = kvm.capabilities().guestMemfd ? vm.createGuestMemfd({ size: 4096n }) : undefined;
  const memory: HostMemory = vm.allocateMemory(4096n);
  const device: Device | undefined = vm.createDevice('vfio', { test: true });
  using efd = new EventFd();
  const err = new KvmError('x', { code: 'EINVAL' });
  const asm = new guest.Asm();
  console.log(vcpu.id, gmem?.size, memory.size, device, efd.fd, err.code, asm.constructor.name);
}

// What only node-kvm does.
export function refused(kvm: Kvm, vm: Vm): unknown[] {
  return [
    new Vm(kvm, 3, 'default', kvm.capabilities()), // TS2673
    new Vm(), // TS2673
    new Vcpu(vm, 0, 3), // TS2673
    new GuestMemfd(3, vm.id, 4096n, 0n), // TS2673
    new Device(3, 1), // TS2673
    new Kvm(3, '/dev/kvm'), // TS2673
    new guest.Guest(), // TS2673
    new HostMemory(), // TS2673
    new Userfault(), // TS2673
  ];
}
export class MyVm extends Vm {} // TS2675
export class MyVcpu extends Vcpu {} // TS2675
export class MyGuestMemfd extends GuestMemfd {} // TS2675
export class MyDevice extends Device {} // TS2675
export class MyHostMemory extends HostMemory {} // TS2675
export class MyUserfault extends Userfault {} // TS2675
`;

describe('published types', () => {
  let declarations: Map<string, string> | undefined;
  const dts = (): Map<string, string> => (declarations ??= emitDeclarations());

  it('refuse constructing or subclassing what only node-kvm makes, and accept what users write', () => {
    const findings = check(dts(), FIXTURE);
    const want = expected(FIXTURE);
    expect(want.size).toBeGreaterThan(10);
    const outside = findings.filter((f) => !want.has(f.line));
    expect(outside.map((f) => f.message), 'unexpected type errors').toEqual([]);
    const got = new Map(findings.map((f) => [f.line, f.code]));
    const lines = FIXTURE.split('\n');
    const missing = [...want].filter(([line, code]) => got.get(line) !== code).map(([line, code]) => `line ${line}: want TS${code}, got ${got.has(line) ? `TS${got.get(line)}` : 'no error'}: ${lines[line - 1]!.trim()}`);
    expect(missing).toEqual([]);
  }, 180_000);

  it('has no @internal member and no constructor of Vm, Vcpu, GuestMemfd or Device but a private one', () => {
    const files = dts();
    const withInternal = [...files].filter(([, text]) => text.includes('@internal')).map(([name]) => name);
    expect(withInternal).toEqual([]);
    for (const [file, cls] of [['vm.d.ts', 'Vm'], ['vcpu.d.ts', 'Vcpu'], ['guest-memfd.d.ts', 'GuestMemfd'], ['device.d.ts', 'Device']] as const) {
      const text = files.get(join(distDir, file));
      expect(text, file).toBeDefined();
      const body = text!.slice(text!.indexOf(`export declare class ${cls} `));
      const constructors = body.slice(0, body.indexOf('\n}')).match(/^\s*(\w+\s+)?constructor\(.*$/gm) ?? [];
      expect(constructors.map((c) => c.trim()), cls).toEqual(['private constructor();']);
    }
  }, 180_000);

  it('exposes every method of guest.Asm with its doc comment (the class is built in layers under lib/guest/asm/)', () => {
    const { program, fixture } = programOf(dts(), "import { guest } from './dist/index.js';\nexport type A = guest.Asm;\n");
    const checker = program.getTypeChecker();
    const alias = program.getSourceFile(fixture)!.statements.find(ts.isTypeAliasDeclaration)!;
    const members = checker.getPropertiesOfType(checker.getTypeAtLocation(alias.name));
    const docOf = (name: string): string | undefined => {
      const m = members.find((p) => p.getName() === name);
      return m && ts.displayPartsToString(m.getDocumentationComment(checker)).trim();
    };
    // Asm's public methods before it was split into layers: none may go or lose its doc.
    const methods = (
      'label newLabel hasLabel bytes u8 u16 u32 u64 u64Label ascii asciz align mov load store storeImm movzx loadZx lea ' +
      'add or adc sbb and sub xor cmp test inc dec not neg imul shl shr sar push pop jmp jcc je jne jz jnz jb jae ja jbe ' +
      'jl jge jg jle call jmpReg callReg decJnz ret out in nop hlt pause ud2 int3 cpuid rdtsc mfence link assemble'
    ).split(' ');
    expect(methods).toHaveLength(69);
    expect(methods.filter((m) => !docOf(m)), 'missing or undocumented in the published Asm').toEqual([]);
    // The check can fail: a name Asm does not have is reported.
    expect(docOf('movabs')).toBeUndefined();
  }, 180_000);

  it('the check can fail: a construction the types allow is reported as missing its error', () => {
    const source = "import { EventFd } from './dist/index.js';\nexport const e = new EventFd(); // TS2673\n";
    // The whole fixture type-checks (the import resolves), so line 2's TS2673 is missing.
    expect(check(dts(), source).map((f) => f.message)).toEqual([]);
    expect(expected(source).get(2)).toBe(2673);
  }, 180_000);
});
