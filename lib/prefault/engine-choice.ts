/**
 * Which engine a VM uses. 'auto' prefers the kernel's KVM_PRE_FAULT_MEMORY;
 * capability 236 alone is not proof (a downstream kernel uses the number for
 * something else), so the first kernel call of an 'auto' pre-fault is a
 * one-page trial, and its failure with EOPNOTSUPP/ENOTTY switches the VM to
 * the software engine for good.
 */
import { existsSync } from 'node:fs';
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

/** Decides the starting engine for one pre-fault. */
export function decideEngine(vm: Vm, choice: PreFaultEngineChoice): EngineDecision {
  if (choice === 'software') return { engine: 'software', reason: "engine 'software' requested", trial: false };
  if (choice === 'kernel') return { engine: 'kernel', reason: "engine 'kernel' requested", trial: false };
  if (vm.preFaultEngine) return { ...vm.preFaultEngine, trial: false };
  if (!vm.capabilities.preFaultMemory) {
    const decision = { engine: 'software' as const, reason: `KVM_CAP_PRE_FAULT_MEMORY is not reported${hostNote()}` };
    vm.rememberPreFaultEngine(decision);
    return { ...decision, trial: false };
  }
  return { engine: 'kernel', reason: 'KVM_PRE_FAULT_MEMORY works on this VM', trial: true };
}

/** After a trial kernel call: remember the outcome for the VM. */
export function settleTrial(vm: Vm, errnoName: string | undefined): EngineDecision | undefined {
  if (errnoName === undefined) {
    vm.rememberPreFaultEngine({ engine: 'kernel', reason: 'KVM_PRE_FAULT_MEMORY works on this VM' });
    return undefined;
  }
  const decision = {
    engine: 'software' as const,
    reason: `KVM_PRE_FAULT_MEMORY failed with ${errnoName} although capability 236 is set${hostNote()}`,
  };
  vm.rememberPreFaultEngine(decision);
  return { ...decision, trial: false };
}

/** Message for a forced kernel engine that the kernel refuses. */
export function unsupportedKernelMessage(errnoName: string): string {
  return `KVM_PRE_FAULT_MEMORY is not supported by this host's KVM (${errnoName})${hostNote()}; use engine 'auto' or 'software'`;
}
