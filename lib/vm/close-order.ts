/**
 * The order in which a closing Vm closes what was created through it.
 * Vcpus first: a running one is kicked out of KVM_RUN. Its memory must stay
 * mapped until it is out, or the guest's next access fails KVM_RUN with
 * EFAULT instead of the clean 'intr' exit; so the other children (memory,
 * guest_memfds, devices) close once no vcpu is still running.
 */
import type { Resource } from '../resource.js';
import type { Vcpu } from '../vcpu.js';

function closeAll(children: readonly Resource[], errors: unknown[]): void {
  for (const child of children) {
    try {
      child.close();
    } catch (e) {
      errors.push(e);
    }
  }
}

/**
 * Closes the vcpus, then the other children (at once, or when the last
 * running vcpu is idle). Returns the errors of the closes made before it
 * returns, first first.
 */
export function closeVmChildren(vcpus: readonly Vcpu[], others: readonly Resource[]): unknown[] {
  const errors: unknown[] = [];
  closeAll(vcpus, errors);
  const busy = vcpus.filter((v) => v.running);
  if (busy.length === 0) closeAll(others, errors);
  else void Promise.all(busy.map((v) => v.idle())).then(() => closeAll(others, []));
  return errors;
}
