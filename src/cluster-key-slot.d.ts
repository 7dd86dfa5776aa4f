// cluster-key-slot (a dependency of ioredis) ships no types.
declare module 'cluster-key-slot' {
  /** Redis Cluster's hash slot (0–16383) of a key, `{hash tag}` included. */
  function calculateSlot (key: string | Buffer): number
  namespace calculateSlot {
    /** The slot all the keys share, or -1 when they are in different slots. */
    function generateMulti (keys: Array<string | Buffer>): number
  }
  export default calculateSlot
}
