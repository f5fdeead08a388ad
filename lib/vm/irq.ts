/**
 * The interrupt family of VM ioctls, one file per struct family: the in-kernel
 * irqchip (irqchip.ts) and PIT (pit.ts), IRQ lines, GSI routing and MSIs
 * (irq-routing.ts), irqfd and ioeventfd (eventfds.ts). Vm's methods delegate
 * to these functions.
 */
export * from './irqchip.js';
export * from './pit.js';
export * from './irq-routing.js';
export * from './eventfds.js';
