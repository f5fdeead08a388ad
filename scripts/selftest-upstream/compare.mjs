#!/usr/bin/env node
// Runs the upstream KVM selftests (built by build.sh) and `node-kvm selftest`
// on this machine, and prints one table: upstream case, its verdict, the port
// case(s), their verdict, and whether they agree or why not. Exits 1 when a
// disagreement is not explained (cases.json), 2 on a usage error.
//
//   node scripts/selftest-upstream/compare.mjs --bin DIR [--tap FILE] [--json FILE] [--cases FILE]
//
// A run with "slow": "<why>" is listed but not run unless UPSTREAM_SLOW=1.
// Verdicts: pass, fail, skip, todo (the port marked a known kernel bug or host
// difference: `not ok # TODO`), not run (upstream stopped at an earlier failure).
// They agree when equal, and when upstream fails where the port says todo.
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, '..', '..');
const args = process.argv.slice(2);
const opt = (name) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const bin = opt('--bin');
if (!bin) {
  process.stderr.write('usage: compare.mjs --bin DIR [--tap FILE] [--json FILE]\n');
  process.exit(2);
}
const spec = JSON.parse(readFileSync(opt('--cases') ?? join(here, 'cases.json'), 'utf8'));
const TIMEOUT_MS = 15 * 60 * 1000;

/** The port's TAP: parsed test points by description (notes split off). */
function portResults() {
  let tap;
  const file = opt('--tap');
  if (file) tap = readFileSync(file, 'utf8');
  else {
    const r = spawnSync(process.execPath, [join(repo, 'dist', 'cli', 'main.js'), 'selftest', ...spec.portSuites, ...spec.portSettings.flatMap((s) => ['--set', s])], {
      encoding: 'utf8',
      timeout: TIMEOUT_MS,
      maxBuffer: 64 << 20,
    });
    if (r.error) throw r.error;
    tap = r.stdout;
  }
  const points = new Map();
  for (const line of tap.split('\n')) {
    const m = /^(ok|not ok) \d+ - (.*)$/.exec(line);
    if (!m) continue;
    let rest = m[2];
    let directive = '';
    const hash = rest.search(/(?<!\\) # (SKIP|TODO)\b/);
    if (hash >= 0) {
      directive = rest.slice(hash + 3);
      rest = rest.slice(0, hash);
    }
    rest = rest.replace(/\\#/g, '#').replace(/\\\\/g, '\\');
    const noted = /^(.*?) \[([^\]]*)\]$/.exec(rest);
    const description = noted ? noted[1] : rest;
    const notes = noted ? noted[2].split('; ') : [];
    const verdict = directive.startsWith('SKIP') ? 'skip' : directive.startsWith('TODO') ? 'todo' : m[1] === 'ok' ? 'pass' : 'fail';
    points.set(description, { verdict, notes, directive: directive.replace(/^(SKIP|TODO)\s*/, '') });
  }
  return points;
}

/** Runs one upstream binary and gives each of its cases a verdict. */
function runUpstream(run) {
  // A run marked slow (minutes in the emulated lab) is left out unless UPSTREAM_SLOW=1.
  if (run.slow && process.env.UPSTREAM_SLOW !== '1') return { verdicts: run.cases.map(() => ({ verdict: 'not run', why: `slow: ${run.slow} (UPSTREAM_SLOW=1 runs it)` })), output: '', status: null };
  const r = spawnSync(join(bin, run.binary), run.args, { encoding: 'utf8', timeout: TIMEOUT_MS, cwd: bin, maxBuffer: 64 << 20 });
  const output = `${r.stdout ?? ''}${r.stderr ?? ''}`;
  const status = r.status;
  const verdicts = [];
  if (status === 0) {
    for (const c of run.cases) verdicts.push(c.skipWhen && output.includes(c.skipWhen) ? { verdict: 'skip', why: c.skipWhen } : { verdict: 'pass' });
  } else if (status === 4) {
    const why = /SKIP[^\n]*/.exec(output)?.[0] ?? 'skipped';
    for (const _ of run.cases) verdicts.push({ verdict: 'skip', why });
  } else {
    // Which case failed: the first (in upstream's order) whose function is in the backtrace.
    const frames = [...output.matchAll(/: (\w+) at [\w.]+:\d+/g)].map((m) => m[1]);
    const message = output.split('\n').filter((l) => l.trim()).at(-1)?.trim() ?? `exit ${status ?? r.signal}`;
    const failed = run.cases.findIndex((c) => frames.includes(c.fn));
    run.cases.forEach((c, i) => {
      if (failed < 0) verdicts.push({ verdict: 'fail', why: `exit ${status ?? r.signal}: ${message}` });
      else if (i < failed) verdicts.push(c.skipWhen && output.includes(c.skipWhen) ? { verdict: 'skip', why: c.skipWhen } : { verdict: 'pass' });
      else if (i === failed) verdicts.push({ verdict: 'fail', why: message });
      else verdicts.push({ verdict: 'not run', why: 'upstream stopped at an earlier failure' });
    });
  }
  return { verdicts, output, status };
}

/** The port's verdict over the TAP points a case maps to. */
function portVerdict(points, patterns) {
  const matched = [];
  for (const p of patterns) {
    if (p.startsWith('re:')) {
      const re = new RegExp(p.slice(3));
      for (const [d, v] of points) if (re.test(d)) matched.push([d, v]);
    } else if (points.has(p)) matched.push([p, points.get(p)]);
  }
  if (!matched.length) return { verdict: 'missing', cases: patterns.join(', '), notes: [], why: '' };
  const vs = matched.map(([, v]) => v.verdict);
  const verdict = vs.includes('fail') ? 'fail' : vs.includes('todo') ? 'todo' : vs.every((v) => v === 'skip') ? 'skip' : 'pass';
  const notes = [...new Set(matched.flatMap(([, v]) => v.notes))];
  const why = matched.find(([, v]) => v.verdict === verdict)?.[1].directive ?? '';
  return { verdict, cases: matched.length === 1 ? matched[0][0] : `${patterns.join(', ')} (${matched.length} cases)`, notes, why };
}

function agreement(c, up, port) {
  if (port.verdict === 'missing') return { ok: false, text: 'port case not found in the TAP' };
  if (up.verdict === 'not run') return { ok: true, text: up.why?.startsWith('slow: ') ? `not run here: ${up.why}` : 'not comparable: upstream stopped earlier' };
  if (up.verdict === port.verdict) return { ok: true, text: 'agree' };
  if (up.verdict === 'fail' && port.verdict === 'todo') return { ok: true, text: `agree: known bug/difference (TODO: ${port.why})` };
  const e = c.explained;
  if (e && e.upstream === up.verdict && e.port === port.verdict && (!e.note || port.notes.includes(e.note))) return { ok: true, text: `explained: ${e.why}` };
  return { ok: false, text: `DISAGREE: upstream ${up.verdict}${up.why ? ` (${up.why})` : ''}, port ${port.verdict}` };
}

const points = portResults();
const rows = [];
let bad = 0;
for (const run of spec.runs) {
  const up = runUpstream(run);
  run.cases.forEach((c, i) => {
    const u = up.verdicts[i];
    const p = portVerdict(points, c.port);
    const a = agreement(c, u, p);
    if (!a.ok) bad++;
    rows.push({ upstream: c.upstream, command: [run.binary, ...run.args].join(' '), upstreamVerdict: u.verdict, upstreamWhy: u.why ?? '', port: p.cases, portVerdict: p.verdict, portNotes: p.notes, agree: a.ok, text: a.text });
  });
}

const kernel = spawnSync('uname', ['-r'], { encoding: 'utf8' }).stdout.trim();
const version = (() => {
  try {
    return readFileSync(join(bin, 'version'), 'utf8').trim();
  } catch {
    return 'unknown version';
  }
})();
const out = [];
out.push(`# upstream KVM selftests (${version}) beside node-kvm selftest, kernel ${kernel}`);
out.push('');
out.push('| upstream case | upstream | port case | port | agree or why not |');
out.push('|---|---|---|---|---|');
const cell = (s) => String(s).replace(/\n/g, ' ').replace(/\|/g, '\\|');
for (const r of rows) {
  const portCell = `${r.port}${r.portNotes.length ? ` [${r.portNotes.join('; ')}]` : ''}`;
  out.push(`| ${cell(r.upstream)} | ${cell(r.upstreamVerdict + (r.upstreamVerdict === 'fail' && r.upstreamWhy ? `: ${r.upstreamWhy}` : ''))} | ${cell(portCell)} | ${cell(r.portVerdict)} | ${cell(r.text)} |`);
}
for (const u of spec.unported) out.push(`| ${cell(u)} | not run | no port yet | - | no port |`);
const count = (f) => rows.filter(f).length;
out.push('');
out.push(
  `summary: ${rows.length} upstream cases; ${count((r) => r.text === 'agree')} agree, ${count((r) => r.text.startsWith('agree: known'))} agree as a known bug (port TODO), ${count((r) => r.text.startsWith('explained'))} explained differences, ${count((r) => r.text.startsWith('not comparable'))} not run upstream, ${count((r) => r.text.startsWith('not run here'))} slow runs left out, ${bad} unexplained disagreements; ${spec.unported.length} upstream tests without a port`,
);
process.stdout.write(`${out.join('\n')}\n`);
const json = opt('--json');
if (json) writeFileSync(json, JSON.stringify({ kernel, version, rows }, null, 2));
process.exit(bad ? 1 : 0);
