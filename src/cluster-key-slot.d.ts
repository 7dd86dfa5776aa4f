// cluster-key-slot (ioredis's own) ships no types: its default export is Redis Cluster's key slot.
declare module 'cluster-key-slot' {
  /** The hash slot (0–16383) of a key, by its {hash tag} when it has one. */
  function calculateSlot (key: string | Buffer): number
  export default calculateSlot
}
