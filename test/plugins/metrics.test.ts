import t from 'tap'
import { Registry, type Metric } from 'prom-client'
import { graphCodeLabel, PreboundHistogram } from '../../plugins/metrics.js'
import { parseMetrics, valueOf } from '../helpers/metrics.js'

t.test('a prebound histogram reads out as Prometheus histograms do: cumulative buckets, +Inf, sum, count', async (t) => {
  const registry = new Registry()
  const histogram = new PreboundHistogram('test_seconds', 'a test', ['route', 'status'], [0.1, 1])
  registry.registerMetric(histogram as unknown as Metric)
  const ok = histogram.series('/v1/things/:id', '200')
  t.equal(histogram.series('/v1/things/:id', '200'), ok, 'one series per label set')
  for (const value of [0.05, 0.1, 0.5, 2]) ok.observe(value)
  histogram.series('/v1/things/:id', '500').observe(3)

  const text = await registry.metrics()
  t.match(text, /# HELP test_seconds a test\n# TYPE test_seconds histogram\n/)
  const samples = parseMetrics(text)
  const labels = { route: '/v1/things/:id', status: '200' }
  t.equal(valueOf(samples, 'test_seconds_bucket', { ...labels, le: '0.1' }), 2, 'a value on a bound counts in its bucket')
  t.equal(valueOf(samples, 'test_seconds_bucket', { ...labels, le: '1' }), 3, 'buckets are cumulative')
  t.equal(valueOf(samples, 'test_seconds_bucket', { ...labels, le: '+Inf' }), 4)
  t.equal(valueOf(samples, 'test_seconds_sum', labels), 2.65)
  t.equal(valueOf(samples, 'test_seconds_count', labels), 4)
  t.equal(valueOf(samples, 'test_seconds_bucket', { status: '500', le: '1' }), 0, 'another label set apart')
  t.equal(valueOf(samples, 'test_seconds_count', { status: '500' }), 1)

  registry.resetMetrics()
  t.equal(valueOf(parseMetrics(await registry.metrics()), 'test_seconds_count', labels), 0, 'reset')
  t.same((await registry.getMetricsAsJSON())[0].name, 'test_seconds', 'the registry\'s JSON form takes it too')
})

t.test('the code label of a Graph request', async (t) => {
  t.equal(graphCodeLabel({ kind: 'delivered' }), 'none')
  t.equal(graphCodeLabel({ kind: 'reauthorize', error: { status: 400, code: 190, message: 'expired' } }), '190', 'Meta\'s error code')
  t.equal(graphCodeLabel({ kind: 'transient', error: { status: 503, message: 'HTTP 503' } }), 'http_503', 'an answer without one: its status')
  t.equal(graphCodeLabel({ kind: 'transient', error: { message: 'request to the Graph API timed out' } }), 'network', 'no answer')
})
