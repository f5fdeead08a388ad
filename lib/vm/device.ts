/** KVM_CREATE_DEVICE: the body of Vm.createDevice(). */
import { Device, DEVICE_TYPES, type DeviceType } from '../device.js';
import { invalidArgument } from '../errors.js';
import { describe } from '../int.js';
import { native } from '../native.js';
import type { Vm } from '../vm.js';
import { callVm } from './call.js';
import { readOptions, toBool, toUint } from './struct.js';

/** Options of Vm.createDevice(). */
export interface CreateDeviceOptions {
  /** KVM_CREATE_DEVICE_TEST: only ask whether the type can be created (returns undefined). */
  test?: boolean;
}

function deviceType(type: unknown, op: string): number {
  if (typeof type === 'string') {
    if (!Object.hasOwn(DEVICE_TYPES, type)) throw invalidArgument(op, `unknown device type ${describe(type)}; known: ${Object.keys(DEVICE_TYPES).join(', ')}`);
    return DEVICE_TYPES[type as DeviceType];
  }
  return toUint(type, 32, 'type', op);
}

/** Creates a device; with { test: true } only checks that it could be (throws if not). */
export function createDevice(vm: Vm, type: DeviceType | number, options: CreateDeviceOptions = {}): Device | undefined {
  const op = 'KVM_CREATE_DEVICE';
  const o = readOptions(options, op, ['test']);
  const n = deviceType(type, op);
  const test = toBool(o.test, 'test', op);
  const fd = callVm(vm, op, { type: n, test }, (vmFd) => native.createDevice(vmFd, n, test ? 1 : 0));
  return test ? undefined : vm.adoptChild(Device.fromFd(fd, n));
}
