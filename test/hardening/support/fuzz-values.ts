/**
 * Values for property-based fuzzing of the public API: plausible ones (page
 * multiples, small slot ids) mixed with everything a caller could wrongly
 * pass (wrong types, negative, NaN, huge bigints, unaligned, cyclic or
 * prototype-less objects, symbols, functions).
 */
import fc from 'fast-check';
import { GuestMemfd, HostMemory } from '../../../lib/index.js';

const PAGE = 4096n;

/**
 * Behaves like a revoked Proxy towards the library (every read, key listing
 * or prototype query throws TypeError) but answers `has` so fast-check can
 * still handle the value (it asks whether a value is cloneable).
 */
function revokedLike(): unknown {
  const revoked = (): never => {
    throw new TypeError("Cannot perform 'get' on a proxy that has been revoked");
  };
  return new Proxy({}, { has: (_t, k) => k === fc.toStringMethod, get: (_t, k) => (k === fc.toStringMethod ? () => '<revoked Proxy>' : revoked()), ownKeys: revoked, getOwnPropertyDescriptor: revoked, getPrototypeOf: revoked });
}

/** An object whose every property read throws (a plain Error), and which claims keys. */
function throwingGetters(): unknown {
  return new Proxy(
    {},
    {
      has: (_t, k) => k === fc.toStringMethod,
      get(_t, key) {
        if (key === fc.toStringMethod) return () => '<object whose getters throw>';
        if (typeof key === 'symbol') return undefined;
        throw new Error(`fuzz: getter of ${key} throws`);
      },
      ownKeys: () => ['size', 'gpa', 'slot', 'memory'],
      getOwnPropertyDescriptor: () => ({ enumerable: true, configurable: true, value: undefined }),
    },
  );
}

function cyclic(): unknown {
  const o: Record<string, unknown> = { size: 4096 };
  o.self = o;
  return o;
}

/** Hand-picked bad values: each has broken some binding somewhere. */
export const weird: fc.Arbitrary<unknown> = fc.constantFrom<unknown>(
  undefined,
  null,
  NaN,
  Infinity,
  -Infinity,
  -0,
  -1,
  0.5,
  4096.5,
  2 ** 31,
  -(2 ** 31),
  2 ** 32,
  2 ** 53,
  2 ** 64,
  1e300,
  '',
  '0',
  '4096',
  'abc',
  true,
  false,
  [],
  [4096],
  {},
  Symbol('junk'),
  () => 4096,
  new Date(0),
  cyclic(),
  Object.create(null),
  -1n,
  -(1n << 64n),
  1n << 64n,
  (1n << 64n) - 1n,
  1n << 63n,
  1n << 200n,
  4095n,
  4097n,
  new Uint8Array(4),
  new Map([[1, 2]]),
);

/** Hostile values for the public API: revoked Proxies, throwing getters, fakes with the right prototype. */
export const hostile: fc.Arbitrary<unknown> = fc.constantFrom<unknown>(
  revokedLike(),
  throwingGetters(),
  new Proxy([1, 2], {
    has: (_t, k) => k === fc.toStringMethod,
    get: (t, k) => {
      if (k === fc.toStringMethod) return () => '<array whose elements throw>';
      if (typeof k === 'symbol') return Reflect.get(t, k);
      if (k === 'length') return 2;
      throw new Error('fuzz: element getter throws');
    },
  }),
  Object.create(HostMemory.prototype),
  Object.create(GuestMemfd.prototype),
);

/** Bad values for the addon itself (its contract allows TypeError, so no hostile objects). */
export const nativeJunk: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 4, arbitrary: weird },
  { weight: 1, arbitrary: fc.integer() },
  { weight: 1, arbitrary: fc.double() },
  { weight: 1, arbitrary: fc.bigInt({ min: -(1n << 80n), max: 1n << 80n }) },
  { weight: 1, arbitrary: fc.string({ maxLength: 8 }) },
  {
    weight: 1,
    arbitrary: fc.anything({ maxDepth: 1, maxKeys: 3, withNullPrototype: true, withBigInt: true, withMap: true, withSet: true, withTypedArray: true, withDate: true, withSparseArray: true, withBoxedValues: true }),
  },
);

/** Any bad value for the public API: the hand-picked ones, random ones of every type, and hostile objects. */
export const junk: fc.Arbitrary<unknown> = fc.oneof({ weight: 5, arbitrary: nativeJunk }, { weight: 1, arbitrary: hostile });

/** A page multiple in [0, maxPages * 4096], as bigint or number. */
export function pages(maxPages: number): fc.Arbitrary<bigint | number> {
  const n = fc.integer({ min: 0, max: maxPages }).map((k) => BigInt(k) * PAGE);
  return fc.oneof(n, n.map(Number));
}

/**
 * A u64-like argument: mostly plausible page multiples up to `maxPages`
 * pages, sometimes unaligned, any u64, or junk.
 */
export function u64(maxPages: number): fc.Arbitrary<unknown> {
  return fc.oneof(
    { weight: 6, arbitrary: pages(maxPages) },
    { weight: 1, arbitrary: fc.integer({ min: 1, max: maxPages * 4096 }).map((k) => (k % 4096 === 0 ? k + 1 : k)) },
    { weight: 1, arbitrary: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }) },
    { weight: 2, arbitrary: junk },
  );
}

/** A guest-physical address: low memory, around 4 GiB, very high, unaligned or junk. */
export const gpa: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 4, arbitrary: fc.integer({ min: 0, max: 64 }).map((k) => BigInt(k) * (1n << 20n)) },
  { weight: 2, arbitrary: fc.integer({ min: 0, max: 16 }).map((k) => (4n << 30n) + BigInt(k) * (2n << 20n)) },
  { weight: 1, arbitrary: fc.constantFrom<unknown>((1n << 52n) - PAGE, (1n << 64n) - PAGE, 1n << 48n, 0x1001n, 4097) },
  { weight: 2, arbitrary: junk },
);

/** A slot id: small, at the limits, with an address-space bit, or junk. */
export const slotId: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: 0, max: 7 }) },
  { weight: 1, arbitrary: fc.constantFrom<unknown>(32763, 32764, 0xffff, 0x10000, 0x10001, 2 ** 32 - 1, 2 ** 32) },
  { weight: 2, arbitrary: junk },
);

/** Either a plausible value or junk, with `weight` parts plausible to one part junk. */
export function orJunk<T>(arb: fc.Arbitrary<T>, weight = 3): fc.Arbitrary<unknown> {
  return fc.oneof({ weight, arbitrary: arb as fc.Arbitrary<unknown> }, { weight: 1, arbitrary: junk });
}

/** An optional property: absent (undefined), plausible, or junk. */
export function optional<T>(arb: fc.Arbitrary<T>): fc.Arbitrary<unknown> {
  return fc.oneof({ weight: 2, arbitrary: fc.constant(undefined) }, { weight: 3, arbitrary: arb as fc.Arbitrary<unknown> }, { weight: 1, arbitrary: junk });
}
