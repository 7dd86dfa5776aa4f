declare module 'cluster-key-slot' {
  /** The Redis Cluster hash slot (0–16383) of a key: CRC16 of its hash tag, or of the whole key. */
  function calculateSlot (key: string | Buffer): number
  namespace calculateSlot {
    /** The slot of keys that all share one, else -1. */
    function generateMulti (keys: Array<string | Buffer>): number
  }
  export default calculateSlot
}
