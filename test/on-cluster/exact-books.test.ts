// test/e2e/exact-books.test.ts again, on a 3-primary Redis Cluster of the file's own (TEST_REDIS=cluster:
// test/helpers/redis.ts): CI runs the end-to-end suites on one Redis and on a cluster.
import t from 'tap'

// A cluster is slower to start and to answer than one redis-server: more than the runner's 120 s.
t.setTimeout(300_000)
process.env.TEST_REDIS = 'cluster'
await import('../e2e/exact-books.test.js')
