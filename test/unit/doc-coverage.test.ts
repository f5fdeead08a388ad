/**
 * Every public name has a doc comment: each export of lib/index.ts (and of
 * the namespaces it re-exports, like `guest`), and each public member of the
 * exported classes and interfaces. Members marked @internal, private or
 * protected ones, and members inherited from outside lib/ (Error,
 * Uint8Array...) are not public names of node-kvm.
 *
 * On failure the message lists each undocumented name as `file:line  Name`
 * so the list can be worked through from the top.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const root = resolve(import.meta.dirname, '../..');
const entry = resolve(root, 'lib/index.ts');

interface PublicName {
  name: string;
  where: string;
  documented: boolean;
}

function isInternal(decl: ts.Declaration): boolean {
  return ts.getJSDocTags(decl).some((t) => t.tagName.text === 'internal');
}


function location(decl: ts.Declaration): string {
  const sf = decl.getSourceFile();
  const { line } = sf.getLineAndCharacterOfPosition(decl.getStart());
  return `${relative(root, sf.fileName)}:${line + 1}`;
}

function hasDoc(symbol: ts.Symbol, checker: ts.TypeChecker, decl: ts.Declaration): boolean {
  if (symbol.getDocumentationComment(checker).some((p) => p.text.trim() !== '')) return true;
  // A JSDoc block with only tags (@deprecated, @see) still documents the name.
  return ts.getJSDocCommentsAndTags(decl).length > 0 && ts.getJSDocTags(decl).some((t) => t.tagName.text !== 'internal');
}

function isNonPublicMember(decl: ts.Declaration): boolean {
  const flags = ts.getCombinedModifierFlags(decl);
  if (flags & (ts.ModifierFlags.Private | ts.ModifierFlags.Protected)) return true;
  const name = ts.getNameOfDeclaration(decl);
  return name !== undefined && ts.isPrivateIdentifier(name);
}

/** Every public name reachable from `entryFile`, declared under `libDir`, with whether it has a doc comment. */
function publicNames(entryFile = entry, libDir = resolve(root, 'lib')): PublicName[] {
  const isLibDeclaration = (decl: ts.Declaration): boolean => resolve(decl.getSourceFile().fileName).startsWith(libDir + '/');
  const program = ts.createProgram([entryFile], {
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    types: ['node'],
  });
  const checker = program.getTypeChecker();
  const moduleSymbol = checker.getSymbolAtLocation(program.getSourceFile(entryFile)!)!;
  const out = new Map<string, PublicName>();
  const seenModules = new Set<ts.Symbol>();

  const add = (name: string, symbol: ts.Symbol, decl: ts.Declaration): void => {
    if (!out.has(name)) out.set(name, { name, where: location(decl), documented: hasDoc(symbol, checker, decl) });
  };

  const visitMembers = (owner: string, symbol: ts.Symbol): void => {
    // Inherited members count too: a class built in layers (guest.Asm) is used
    // through its exported name, so every layer's public members are its names.
    const inherited = checker.getPropertiesOfType(checker.getDeclaredTypeOfSymbol(symbol));
    const members = [...new Set([...(symbol.members ? symbol.members.values() : []), ...inherited])];
    const statics = symbol.exports ? [...symbol.exports.values()] : [];
    for (const m of [...members, ...statics]) {
      if (m.flags & (ts.SymbolFlags.TypeParameter | ts.SymbolFlags.Signature)) continue;
      const name = m.getName();
      if (name === '__constructor' || name === 'prototype' || name.startsWith('__@')) continue;
      const decl = m.declarations?.[0];
      if (!decl || !isLibDeclaration(decl) || isInternal(decl) || isNonPublicMember(decl)) continue;
      add(`${owner}.${name}`, m, decl);
    }
  };

  const visitModule = (prefix: string, mod: ts.Symbol): void => {
    if (seenModules.has(mod)) return;
    seenModules.add(mod);
    for (const exported of checker.getExportsOfModule(mod)) {
      const symbol = exported.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(exported) : exported;
      const name = `${prefix}${exported.getName()}`;
      if (symbol.flags & ts.SymbolFlags.ValueModule && !(symbol.flags & (ts.SymbolFlags.Class | ts.SymbolFlags.Function))) {
        visitModule(`${name}.`, symbol);
        continue;
      }
      const decl = symbol.declarations?.[0];
      if (!decl || !isLibDeclaration(decl) || isInternal(decl)) continue;
      add(name, symbol, decl);
      if (symbol.flags & (ts.SymbolFlags.Class | ts.SymbolFlags.Interface)) visitMembers(name, symbol);
    }
  };

  visitModule('', moduleSymbol);
  return [...out.values()];
}

describe('doc coverage', () => {
  let cached: PublicName[] | undefined;
  const names = (): PublicName[] => (cached ??= publicNames());

  it('every public name of node-kvm has a doc comment', () => {
    const all = names();
    expect(all.length).toBeGreaterThan(300);
    const missing = all.filter((n) => !n.documented).sort((a, b) => a.where.localeCompare(b.where, 'en', { numeric: true }));
    const documented = all.length - missing.length;
    const report =
      `${documented} of ${all.length} public names documented (${((documented / all.length) * 100).toFixed(1)}%); ` +
      `add a /** doc comment */ to each of these ${missing.length}:\n` +
      missing.map((n) => `  ${n.where.padEnd(36)} ${n.name}`).join('\n');
    expect(missing.map((n) => `${n.where} ${n.name}`), report).toEqual([]);
  }, 120_000);

  it('walks classes, interfaces and namespaces, and leaves @internal members out', () => {
    const all = names();
    expect(all.find((n) => n.name === 'Kvm')?.documented).toBe(true);
    expect(all.some((n) => n.name === 'Vm.createVcpu')).toBe(true);
    expect(all.some((n) => n.name.startsWith('guest.Asm.'))).toBe(true);
    // Asm's instructions live in the layers it extends (lib/guest/asm/).
    expect(all.some((n) => n.name === 'guest.Asm.mov')).toBe(true);
    expect(all.some((n) => n.name === 'Vm.rememberPreFaultEngine' || n.name === 'Vcpu.trackStep')).toBe(false);
  }, 120_000);

  it('finds undocumented exports and members (the check can fail)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'node-kvm-doc-'));
    try {
      writeFileSync(
        join(dir, 'index.ts'),
        [
          'export function bare(): void {}',
          'class Base {',
          '  inheritedUndocumented = 0;',
          '}',
          '/** Documented. */',
          'export class Thing extends Base {',
          '  undocumentedField = 1;',
          '  /** Documented. */',
          '  documentedField = 2;',
          '  /** @internal */',
          '  hidden = 3;',
          '  #secret = 4;',
          '}',
          'export * as ns from "./ns.js";',
        ].join('\n'),
      );
      writeFileSync(join(dir, 'ns.ts'), 'export const inner = 1;\n');
      const found = publicNames(join(dir, 'index.ts'), dir);
      expect(found.filter((n) => !n.documented).map((n) => n.name).sort()).toEqual(['Thing.inheritedUndocumented', 'Thing.undocumentedField', 'bare', 'ns.inner']);
      expect(found.map((n) => n.name)).not.toContain('Thing.hidden');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);
});
