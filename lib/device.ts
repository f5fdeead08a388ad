/**
 * Device: a KVM device made by Vm.createDevice() (KVM_CREATE_DEVICE), with
 * its attribute ioctls. On x86 the device KVM offers is 'vfio' (the
 * KVM-VFIO pseudo device that tells KVM about VFIO groups/files).
 */
import { callNative, invalidArgument } from './errors.js';
import { native } from './native.js';
import { Resource } from './resource.js';
import { readOptions, toU64Arg, toUint } from './vm/struct.js';

/** KVM_DEV_TYPE_* by name. */
export const DEVICE_TYPES = {
  'fsl-mpic-20': 1, 'fsl-mpic-42': 2, xics: 3, vfio: 4, 'arm-vgic-v2': 5, flic: 6,
  'arm-vgic-v3': 7, 'arm-vgic-its': 8, xive: 9, 'arm-pv-time': 10, 'riscv-aia': 11,
} as const;
/** A device type name of DEVICE_TYPES. */
export type DeviceType = keyof typeof DEVICE_TYPES;

/** Which attribute (struct kvm_device_attr without the value). */
export interface DeviceAttrId {
  /** kvm_device_attr.group: the attribute group, device specific (for 'vfio': KVM_DEV_VFIO_FILE = 1 ...). */
  group: number;
  /** kvm_device_attr.attr: the attribute within `group` (for 'vfio' files: KVM_DEV_VFIO_FILE_ADD = 1, _DEL = 2), a u64. */
  attr: bigint | number;
}

/** An attribute and the value to set; `value` is passed as a u64 (or an int for `size: 4`), omitted for attributes that take none. */
export interface DeviceAttrValue extends DeviceAttrId {
  /** The value KVM reads through kvm_device_attr.addr (node-kvm points addr at it): a u64, or a u32 when `size` is 4 (for 'vfio': the VFIO file descriptor). */
  value?: bigint | number;
  /** Width of the value in memory: 8 (default) or 4 bytes. */
  size?: 4 | 8;
}

function readAttr(a: unknown, op: string, withValue: boolean): { group: number; attr: bigint; value: bigint | undefined; size: 4 | 8 } {
  const o = readOptions(a, op, withValue ? ['group', 'attr', 'value', 'size'] : ['group', 'attr', 'size'], ['group', 'attr'], 'attribute');
  const size = o.size ?? 8;
  if (size !== 4 && size !== 8) throw invalidArgument(op, 'size must be 4 or 8');
  const value = o.value === undefined ? undefined : toU64Arg(o.value, 'value', op);
  if (value !== undefined && size === 4 && value > 0xffff_ffffn) throw invalidArgument(op, 'value does not fit in 4 bytes');
  return { group: toUint(o.group, 32, 'group', op), attr: toU64Arg(o.attr, 'attr', op), value, size };
}

/** An owned KVM device fd. */
export class Device extends Resource {
  readonly #fd: number;
  /** KVM_DEV_TYPE_* of this device. */
  readonly type: number;

  /** Private, and so in the published types too: a Device comes from Vm.createDevice(). */
  private constructor(fd: number, type: number) {
    super(`Device(type ${type}, fd ${fd})`, () => native.close(fd));
    this.#fd = fd;
    this.type = type;
  }

  /** @internal Wraps a new device fd of KVM_DEV_TYPE_* `type` (Vm.createDevice()). */
  static fromFd(fd: number, type: number): Device {
    return new Device(fd, type);
  }

  /** The device fd; throws ECLOSED after close(). */
  get fd(): number {
    this.assertOpen('fd');
    return this.#fd;
  }

  /** KVM_SET_DEVICE_ATTR. */
  setAttr(attribute: DeviceAttrValue): void {
    const op = 'KVM_SET_DEVICE_ATTR';
    const a = readAttr(attribute, op, true); // read before the open check: a getter cannot close and recycle the fd
    this.assertOpen(op);
    let buf: Uint8Array | null = null;
    if (a.value !== undefined) {
      buf = new Uint8Array(a.size);
      const v = new DataView(buf.buffer);
      if (a.size === 8) v.setBigUint64(0, a.value, true);
      else v.setUint32(0, Number(a.value), true);
    }
    callNative(op, { group: a.group, attr: a.attr }, () => native.setDeviceAttr(this.#fd, a.group, a.attr, buf));
  }

  /** KVM_GET_DEVICE_ATTR: the attribute's value (a u64, or a u32 with size 4). */
  getAttr(attribute: DeviceAttrId & { size?: 4 | 8 }): bigint {
    const op = 'KVM_GET_DEVICE_ATTR';
    const a = readAttr(attribute, op, false); // read before the open check (see setAttr)
    this.assertOpen(op);
    const buf = new Uint8Array(a.size);
    callNative(op, { group: a.group, attr: a.attr }, () => native.getDeviceAttr(this.#fd, a.group, a.attr, buf));
    const v = new DataView(buf.buffer);
    return a.size === 8 ? v.getBigUint64(0, true) : BigInt(v.getUint32(0, true));
  }

  /** KVM_HAS_DEVICE_ATTR: whether the device knows the attribute (ENXIO gives false). */
  hasAttr(attribute: DeviceAttrId): boolean {
    const op = 'KVM_HAS_DEVICE_ATTR';
    const a = readAttr(attribute, op, false); // read before the open check (see setAttr)
    this.assertOpen(op);
    return callNative(op, { group: a.group, attr: a.attr }, () => native.hasDeviceAttr(this.#fd, a.group, a.attr));
  }
}
