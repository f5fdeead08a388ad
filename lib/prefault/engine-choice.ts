/**
 * Which engine a VM uses. 'auto' prefers the kernel's KVM_PRE_FAULT_MEMORY;
 * capability 236 alone is not proof (a downstream kernel uses the number for
 * something else), so the first kernel call of an 'auto' pre-fault is a
 * one-page trial, and its failure with EOPNOTSUPP/ENOTTY switches to the
 * software engine for good.
 *
 * The outcome is remembered per host, not per VM: whether the ioctl works
 * depends on the kernel, the KVM module and its parameters (TDP MMU on or
 * off) and the VM type, none of which changes while the process runs. So
 * the trial is paid once per process and VM type, and a fresh VM starts with
 * the engine that works (what `auto` costs is then what the engine costs).
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { release, version } from 'node:os';
import type { Vm } from '../vm.js';
import type { PreFaultEngineChoice, PreFaultEngineName } from './contract.js';

/** The engine to start with and why. `trial` means the kernel is unproven on this VM. */
export interface EngineDecision {
  engine: PreFaultEngineName;
  reason: string;
  trial: boolean;
}

/** Whether this host's KVM is kvm_pvm (shadow paging), for clearer messages. */
export function isShadowPagingHost(): boolean {
  return existsSync('/sys/module/kvm_pvm');
}

function hostNote(): string {
  return isShadowPagingHost() ? ' (this host runs kvm_pvm: shadow paging, no TDP MMU)' : '';
}

type Remembered = { engine: PreFaultEngineName; reason: string };

let hostIdentity: string | undefined;
const decisions = new Map<string, Remembered>();

function readOr(path: string, fallback: string): string {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return fallback;
  }
}

/**
 * What the kernel-engine outcome depends on: kernel release and build, the
 * loaded KVM vendor modules, and the KVM module parameters that switch the
 * MMU. Read once per process.
 */
export function hostEngineIdentity(): string {
  if (hostIdentity === undefined) {
    let modules: string[] = [];
    try {
      modules = readdirSync('/sys/module').filter((m) => m === 'kvm' || m.startsWith('kvm_'));
    } catch {
      // No sysfs: the kernel identity alone.
    }
    const params = ['tdp_mmu'].map((p) => `${p}=${readOr(`/sys/module/kvm/parameters/${p}`, '-')}`);
    const vendor = ['kvm_intel/parameters/ept', 'kvm_amd/parameters/npt'].map((p) => `${p}=${readOr(`/sys/module/${p}`, '-')}`);
    hostIdentity = [release(), version(), modules.sort().join(','), ...params, ...vendor].join('|');
  }
  return hostIdentity;
}

function keyOf(vm: Vm): string {
  return `${hostEngineIdentity()}|${vm.type}`;
}

function remember(vm: Vm, decision: Remembered): void {
  decisions.set(keyOf(vm), decision);
  vm.preFaultEngine = decision;
}

/** Decides the starting engine for one pre-fault. */
export function decideEngine(vm: Vm, choice: PreFaultEngineChoice): EngineDecision {
  if (choice === 'software') return { engine: 'software', reason: "engine 'software' requested", trial: false };
  if (choice === 'kernel') return { engine: 'kernel', reason: "engine 'kernel' requested", trial: false };
  if (vm.preFaultEngine) return { ...vm.preFaultEngine, trial: false };
  const known = decisions.get(keyOf(vm));
  if (known) {
    vm.preFaultEngine = known;
    return { ...known, trial: false };
  }
  if (!vm.capabilities.preFaultMemory) {
    const decision = { engine: 'software' as const, reason: `KVM_CAP_PRE_FAULT_MEMORY is not reported${hostNote()}` };
    remember(vm, decision);
    return { ...decision, trial: false };
  }
  return { engine: 'kernel', reason: 'KVM_PRE_FAULT_MEMORY works on this host', trial: true };
}

/** After a trial kernel call: remember the outcome for this host and VM type. */
export function settleTrial(vm: Vm, errnoName: string | undefined): EngineDecision | undefined {
  if (errnoName === undefined) {
    remember(vm, { engine: 'kernel', reason: 'KVM_PRE_FAULT_MEMORY works on this host' });
    return undefined;
  }
  const decision = {
    engine: 'software' as const,
    reason: `KVM_PRE_FAULT_MEMORY failed with ${errnoName} although capability 236 is set${hostNote()}`,
  };
  remember(vm, decision);
  return { ...decision, trial: false };
}

/** Message for a forced kernel engine that the kernel refuses. */
export function unsupportedKernelMessage(errnoName: string): string {
  return `KVM_PRE_FAULT_MEMORY is not supported by this host's KVM (${errnoName})${hostNote()}; use engine 'auto' or 'software'`;
}
