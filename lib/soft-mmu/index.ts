/**
 * The soft MMU: a pure TypeScript model of KVM's x86 guest physical page
 * tables and of KVM_PRE_FAULT_MEMORY's stepping, for hosts whose kernel cannot
 * pre-fault (shadow paging). No I/O; unit-testable alone.
 */

export {
  alignDownToLevel, chooseMappingLevel, compareLevels, isLevelAligned, isPageLevel, levelSize, minLevel,
  LEVEL_PAGES, LEVEL_SIZE, PAGE_LEVELS, PAGE_SIZE,
  type ChooseMappingLevelParams, type MappingSlot, type PageLevel,
} from './levels.js';
export {
  SoftMmu, SOFT_MMU_GPA_LIMIT,
  type SoftMappingInfo, type SoftMmuLeaf, type SoftMmuStats,
} from './page-table.js';
export {
  privateRangesQuery,
  type GpaRange, type PrivateAttributeQuery, type RangeAttribute,
} from './attributes.js';
export {
  planPreFaultStep, validatePreFaultRange,
  type PlanPreFaultStepParams, type PreFaultEfaultStep, type PreFaultEnoentStep, type PreFaultMapStep,
  type PreFaultRequest, type PreFaultStep, type SoftSlotView,
} from './plan.js';
export {
  simulatePreFaultMemory,
  type SimulatedPreFaultResult, type SimulatePreFaultParams,
} from './simulate.js';
