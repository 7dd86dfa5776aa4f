import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import t from 'tap'

/**
 * CI runs the suite on each Node.js that `engines` names (.ci/run): the second run puts Node 24
 * first on PATH and sets EXPECT_NODE_MAJOR. A run is only a test of that Node when the runner and
 * every process the tests start run it: those spawned with process.execPath, with `node` from
 * PATH, and npm (which runs `npm start`'s script: test/start.test.ts checks the service itself).
 */
const ROOT = fileURLToPath(new URL('..', import.meta.url))
const expected = process.env.EXPECT_NODE_MAJOR ?? process.versions.node.split('.')[0]
const run = promisify(execFile)
const major = (version: string) => version.trim().replace(/^v/, '').split('.')[0]

t.test(`every process of this test run is Node.js ${expected}`, async (t) => {
  t.equal(major(process.versions.node), expected, 'the test runner')
  t.equal(major((await run(process.execPath, ['-p', 'process.versions.node'])).stdout), expected, 'a child by process.execPath')
  t.equal(major((await run('node', ['-p', 'process.versions.node'])).stdout), expected, 'a child by `node` from PATH')
  const npm = JSON.parse((await run('npm', ['version', '--json'], { cwd: ROOT })).stdout) as { node: string }
  t.equal(major(npm.node), expected, 'npm, which runs the scripts')
})
