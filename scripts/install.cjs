#!/usr/bin/env node
// The package's install script: use the N-API prebuild shipped in
// prebuilds/ when it loads; otherwise build from source with node-gyp
// (node-gyp-build does both). Without a prebuild for this platform and
// without a compiler, say so plainly instead of a node-gyp traceback.
'use strict';
const { spawnSync } = require('node:child_process');
const { existsSync } = require('node:fs');
const { delimiter, join } = require('node:path');

const root = join(__dirname, '..');

function onPath(name) {
  return (process.env.PATH || '').split(delimiter).some((dir) => dir && existsSync(join(dir, name)));
}

function prebuildLoads() {
  try {
    require('node-gyp-build')(root);
    return true;
  } catch {
    return false;
  }
}

if (prebuildLoads()) process.exit(0);

const cxx = process.env.CXX || 'c++';
const missing = [
  onPath(cxx) || onPath('g++') || onPath('clang++') ? null : 'a C++17 compiler (g++ or clang++)',
  onPath('make') ? null : 'make',
  onPath('python3') || onPath('python') ? null : 'python3',
].filter(Boolean);
if (missing.length > 0) {
  process.stderr.write(
    `node-kvm: no prebuilt addon loads here (${process.platform}-${process.arch}, Node ${process.version}; ` +
      `the package's prebuilds/ holds an N-API build for linux-x64), and building it from source needs ` +
      `${missing.join(', ')}, not found on PATH.\n` +
      'node-kvm: install them (Debian/Ubuntu: apt-get install g++ make python3) and reinstall, ' +
      'or use a platform with a prebuild.\n',
  );
  process.exit(1);
}

const gypBuild = join(require.resolve('node-gyp-build/package.json'), '..', 'bin.js');
const r = spawnSync(process.execPath, [gypBuild], { cwd: root, stdio: 'inherit' });
process.exit(r.status === null ? 1 : r.status);
