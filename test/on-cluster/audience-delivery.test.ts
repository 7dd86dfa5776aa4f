// test/e2e/audience-delivery.test.ts again, on a 3-primary Redis Cluster of the file's own (TEST_REDIS=cluster:
// test/helpers/redis.ts): CI runs the end-to-end suites on one Redis and on a cluster.
process.env.TEST_REDIS = 'cluster'
await import('../e2e/audience-delivery.test.js')
