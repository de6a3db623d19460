// Drives a live Squall API with the real OpenWhisk JavaScript client (npm `openwhisk`) and checks that
// what the client gets back is what OpenWhisk would answer.
//
// Environment (the client's own variables): __OW_API_HOST (with an explicit http:// scheme),
// __OW_API_KEY ("uuid:secret") and __OW_NAMESPACE (the namespace the key belongs to).
// Prints one line per check, "ok - name" or "not ok - name: why", then "N passed, N failed";
// exits 1 when a check failed. A step that fails stops the rest of its group, which are
// reported as "not ok … (not run)" so every check always appears in the output.
'use strict'

const assert = require('node:assert/strict')
const openwhisk = require('openwhisk')

const NS = process.env.__OW_NAMESPACE
if (!process.env.__OW_API_HOST || !process.env.__OW_API_KEY || !NS) {
  console.error('set __OW_API_HOST, __OW_API_KEY and __OW_NAMESPACE')
  process.exit(2)
}

// apihost is read from __OW_API_HOST; the explicit scheme keeps the client on plain HTTP.
const ow = openwhisk({ apihost: process.env.__OW_API_HOST, api_key: process.env.__OW_API_KEY })
const suffix = Date.now().toString(36)
const HELLO = 'function main(params) { return { payload: "Hello, " + (params.name || "World") } }'

// The client turns every HTTP error into an OpenWhiskError carrying `statusCode` and the body as `error`.
async function rejectsWith (promise, status) {
  try {
    await promise
  } catch (err) {
    assert.equal(err.statusCode, status, `expected HTTP ${status}, got ${err.statusCode}: ${err.message}`)
    assert.equal(typeof err.error.error, 'string', 'error body has an `error` message')
    assert.equal(typeof err.error.code, 'string', 'error body has a `code` (transaction id)')
    return err
  }
  assert.fail(`expected HTTP ${status}, but the call succeeded`)
}

function annotation (entity, key) {
  const found = entity.annotations.find(a => a.key === key)
  return found && found.value
}

const namespaces = () => [
  ['namespaces.list returns an array with the key\'s namespace', async () => {
    const list = await ow.namespaces.list()
    assert.ok(Array.isArray(list))
    assert.ok(list.includes(NS), `${JSON.stringify(list)} lacks ${NS}`)
  }],
  ['namespaces.get lists the four collections of `_`', async () => {
    const all = await ow.namespaces.get()
    for (const kind of ['actions', 'packages', 'triggers', 'rules']) {
      assert.ok(Array.isArray(all[kind]), `${kind} is not an array`)
    }
  }]
]

const packages = () => {
  const name = `compat-pkg-${suffix}`
  return [
    ['packages.create returns version 0.0.1, no annotations, no binding', async () => {
      const pkg = await ow.packages.create({ name })
      assert.equal(pkg.name, name)
      assert.equal(pkg.namespace, NS)
      assert.equal(pkg.version, '0.0.1')
      assert.deepEqual(pkg.annotations, [])
      assert.deepEqual(pkg.binding, {})
      assert.equal(pkg.publish, false)
    }],
    ['packages.create again without overwrite is 409', async () => {
      await rejectsWith(ow.packages.create({ name }), 409)
    }],
    ['packages.get returns the package', async () => {
      const pkg = await ow.packages.get({ name })
      assert.equal(pkg.name, name)
      assert.equal(pkg.namespace, NS)
    }],
    ['packages.list contains it', async () => {
      const list = await ow.packages.list()
      assert.ok(list.some(p => p.name === name && p.namespace === NS), JSON.stringify(list))
    }],
    ['packages.update bumps the version to 0.0.2', async () => {
      const pkg = await ow.packages.update({ name, package: { parameters: [{ key: 'colour', value: 'blue' }] } })
      assert.equal(pkg.version, '0.0.2')
      assert.deepEqual(pkg.parameters, [{ key: 'colour', value: 'blue' }])
    }],
    ['packages.delete returns the package, then get is 404', async () => {
      const pkg = await ow.packages.delete({ name })
      assert.equal(pkg.name, name)
      await rejectsWith(ow.packages.get({ name }), 404)
    }]
  ]
}

const triggers = () => {
  const name = `compat-trigger-${suffix}`
  return [
    ['triggers.create returns empty limits, version 0.0.1', async () => {
      const trigger = await ow.triggers.create({ name })
      assert.equal(trigger.name, name)
      assert.equal(trigger.namespace, NS)
      assert.deepEqual(trigger.limits, {})
      assert.deepEqual(trigger.parameters, [])
      assert.equal(trigger.version, '0.0.1')
    }],
    ['triggers.get returns the trigger', async () => {
      const trigger = await ow.triggers.get({ name })
      assert.equal(trigger.name, name)
      assert.deepEqual(trigger.limits, {})
    }],
    ['triggers.list contains it', async () => {
      const list = await ow.triggers.list()
      assert.ok(list.some(t => t.name === name && t.namespace === NS), JSON.stringify(list))
    }],
    ['triggers.update bumps the version and keeps the parameters', async () => {
      const trigger = await ow.triggers.update({ name, trigger: { parameters: [{ key: 'a', value: 1 }] } })
      assert.equal(trigger.version, '0.0.2')
      assert.deepEqual(trigger.parameters, [{ key: 'a', value: 1 }])
    }],
    ...fires(name),
    ['triggers.delete returns the trigger, then get is 404', async () => {
      const trigger = await ow.triggers.delete({ name })
      assert.equal(trigger.name, name)
      await rejectsWith(ow.triggers.get({ name }), 404)
    }]
  ]
}

// Set by the pytest runner when the rule engine, an invoker (echoing its arguments) and the recorder run
// beside the API: only then does a fired trigger leave records to read back.
const RULE_ENGINE = Boolean(process.env.COMPAT_RULE_ENGINE)
const ACTIVATION_ID = /^[0-9a-f]{32}$/

// The record `id` once it is stored: the trigger's record is written after the 202, by the rule engine.
async function eventually (id, deadlineMs = 15000) {
  const deadline = Date.now() + deadlineMs
  for (;;) {
    try {
      return await ow.activations.get({ name: id })
    } catch (err) {
      if (err.statusCode !== 404 || Date.now() > deadline) throw err
    }
    await new Promise(resolve => setTimeout(resolve, 100))
  }
}

// Firing the trigger `name` (which has the parameter a=1) with triggers.invoke.
const fires = name => {
  const [rule, action] = ['fire-rule', 'fire-action'].map(n => `compat-${n}-${suffix}`)
  let fired = null
  const checks = [
    // OpenWhisk answers 204 without a body (and without a Content-Type): the client's HTTP library (needle)
    // then resolves to the raw, empty body, a zero-length Buffer.
    ['triggers.invoke with no rule resolves to the empty body of a 204', async () => {
      const answer = await ow.triggers.invoke({ name, params: { x: 1 } })
      assert.ok(Buffer.isBuffer(answer), `expected an empty Buffer, got ${JSON.stringify(answer)}`)
      assert.equal(answer.length, 0)
    }],
    ['triggers.invoke of an unknown trigger is 404', async () => {
      await rejectsWith(ow.triggers.invoke({ name: `${name}-missing`, params: { x: 1 } }), 404)
    }],
    ['triggers.invoke with an active rule resolves to {activationId}', async () => {
      await ow.actions.create({ name: action, action: HELLO })
      await ow.rules.create({ name: rule, action, trigger: name })
      const answer = await ow.triggers.invoke({ name, params: { x: 2 } })
      assert.deepEqual(Object.keys(answer), ['activationId'], JSON.stringify(answer))
      assert.match(answer.activationId, ACTIVATION_ID)
      fired = answer.activationId
    }]
  ]
  if (RULE_ENGINE) {
    checks.push(
      ['activations.get reads the trigger activation: payload, one log line per rule', async () => {
        const record = await eventually(fired)
        assert.equal(record.activationId, fired)
        assert.equal(record.name, name)
        assert.equal(record.namespace, NS)
        assert.equal(record.response.success, true)
        assert.deepEqual(record.response.result, { x: 2 })
        assert.equal(record.logs.length, 1, JSON.stringify(record.logs))
        assert.equal(typeof record.logs[0], 'string', 'each log line is a JSON string')
        const line = JSON.parse(record.logs[0])
        assert.equal(line.statusCode, 0)
        assert.equal(line.success, true)
        assert.equal(line.rule, `${NS}/${rule}`)
        assert.equal(line.action, `${NS}/${action}`)
        assert.match(line.activationId, ACTIVATION_ID)
        // The rule's run got trigger parameters < payload (the stand-in invoker echoes its arguments).
        const run = await eventually(line.activationId)
        assert.equal(run.name, action)
        assert.equal(run.cause, fired)
        assert.equal(run.response.result.a, 1)
        assert.equal(run.response.result.x, 2)
      }]
    )
  }
  checks.push(
    ['triggers.invoke with the rule disabled resolves to the empty body of a 204', async () => {
      await ow.rules.disable({ name: rule })
      const answer = await ow.triggers.invoke({ name, params: { x: 3 } })
      assert.ok(Buffer.isBuffer(answer) && answer.length === 0, JSON.stringify(answer))
      await ow.rules.delete({ name: rule })
      await ow.actions.delete({ name: action })
    }]
  )
  return checks
}

const rules = () => {
  const [rule, trigger, hello, other] = ['rule', 'trigger', 'hello', 'tests'].map(n => `compat-${n}-${suffix}`)
  const ref = name => ({ path: NS, name })
  return [
    ['rules: the trigger and two actions can be created', async () => {
      await ow.triggers.create({ name: trigger })
      await ow.actions.create({ name: hello, action: HELLO })
      await ow.actions.create({ name: other, action: HELLO })
    }],
    ['rules.create links trigger and action as {path,name}, active', async () => {
      const created = await ow.rules.create({ name: rule, action: hello, trigger })
      assert.equal(created.name, rule)
      assert.equal(created.namespace, NS)
      assert.deepEqual(created.trigger, ref(trigger))
      assert.deepEqual(created.action, ref(hello))
      assert.equal(created.status, 'active')
      assert.equal(created.version, '0.0.1')
    }],
    ['rules.get shows the rule active', async () => {
      const got = await ow.rules.get({ name: rule })
      assert.equal(got.status, 'active')
      assert.deepEqual(got.trigger, ref(trigger))
    }],
    ['rules.list contains it', async () => {
      const list = await ow.rules.list()
      assert.ok(list.some(r => r.name === rule && r.namespace === NS), JSON.stringify(list))
    }],
    ['rules.disable makes it inactive', async () => {
      await ow.rules.disable({ name: rule })
      assert.equal((await ow.rules.get({ name: rule })).status, 'inactive')
    }],
    ['rules.enable makes it active again', async () => {
      await ow.rules.enable({ name: rule })
      assert.equal((await ow.rules.get({ name: rule })).status, 'active')
    }],
    ['rules.update re-links to another action and bumps the version', async () => {
      const updated = await ow.rules.update({ name: rule, action: other, trigger })
      assert.deepEqual(updated.action, ref(other))
      assert.equal(updated.version, '0.0.2')
      assert.equal((await ow.rules.get({ name: rule })).status, 'active')
    }],
    ['rules.create with a missing trigger is rejected', async () => {
      const err = await rejectsWith(ow.rules.create({ name: `${rule}-x`, action: hello, trigger: 'no-such' }), 400)
      assert.match(err.error.error, /does not exist/)
    }],
    ['rules.delete removes it, then get is 404', async () => {
      const deleted = await ow.rules.delete({ name: rule })
      assert.equal(deleted.name, rule)
      await rejectsWith(ow.rules.get({ name: rule }), 404)
      await ow.triggers.delete({ name: trigger })
      await ow.actions.delete({ name: hello })
      await ow.actions.delete({ name: other })
    }]
  ]
}

const actions = () => {
  const name = `compat-action-${suffix}`
  const pkg = `compat-apkg-${suffix}`
  const seq = `compat-seq-${suffix}`
  return [
    ['actions.create resolves nodejs:default and adds the exec annotation', async () => {
      const action = await ow.actions.create({ name, action: HELLO })
      assert.equal(action.name, name)
      assert.equal(action.namespace, NS)
      assert.equal(action.version, '0.0.1')
      assert.match(action.exec.kind, /^nodejs:\d+$/)
      assert.equal(action.exec.code, HELLO)
      assert.equal(annotation(action, 'exec'), action.exec.kind)
      assert.equal(action.limits.timeout, 60000)
      assert.equal(action.limits.memory, 256)
    }],
    ['actions.create again without overwrite is 409', async () => {
      await rejectsWith(ow.actions.create({ name, action: HELLO }), 409)
    }],
    ['actions.get returns the code', async () => {
      const action = await ow.actions.get({ name })
      assert.equal(action.exec.code, HELLO)
    }],
    ['actions.get with code=false leaves the code out', async () => {
      const action = await ow.actions.get({ name, code: false })
      assert.equal(action.name, name)
      assert.equal(action.exec.code, undefined)
    }],
    ['actions.list items all belong to the namespace', async () => {
      const list = await ow.actions.list()
      assert.ok(list.some(a => a.name === name), JSON.stringify(list))
      for (const item of list) assert.equal(item.namespace, NS)
    }],
    ['actions.list with count returns {actions: N}', async () => {
      const counted = await ow.actions.list({ count: true })
      assert.ok(Number.isInteger(counted.actions) && counted.actions >= 1, JSON.stringify(counted))
    }],
    ['actions.update bumps the version and stores parameters', async () => {
      const action = await ow.actions.update({ name, action: HELLO, params: { name: 'Squall' } })
      assert.equal(action.version, '0.0.2')
      assert.deepEqual(action.parameters, [{ key: 'name', value: 'Squall' }])
    }],
    ['actions in a package have namespace ns/pkg', async () => {
      await ow.packages.create({ name: pkg })
      const action = await ow.actions.create({ name: `${pkg}/inner`, action: HELLO })
      assert.equal(action.namespace, `${NS}/${pkg}`)
      assert.equal(action.name, 'inner')
      const got = await ow.actions.get({ name: `${pkg}/inner` })
      assert.equal(got.namespace, `${NS}/${pkg}`)
    }],
    ['a sequence stores its components', async () => {
      const action = await ow.actions.create({ name: seq, sequence: [`/${NS}/${name}`] })
      assert.equal(action.exec.kind, 'sequence')
      assert.deepEqual(action.exec.components, [`/${NS}/${name}`])
    }],
    ['an unknown kind is 400', async () => {
      await rejectsWith(ow.actions.create({ name: `${name}-bad`, action: HELLO, kind: 'cobol:85' }), 400)
    }],
    ['an action in a missing package is rejected', async () => {
      const err = await rejectsWith(ow.actions.create({ name: `missing-${pkg}/x`, action: HELLO }), 404)
      assert.ok(err.error.error.length > 0)
    }],
    ['actions.get of a missing action is 404', async () => {
      await rejectsWith(ow.actions.get({ name: `${name}-missing` }), 404)
    }],
    ['actions.delete returns the action, then get and delete are 404', async () => {
      await ow.actions.delete({ name: seq })
      await ow.actions.delete({ name: `${pkg}/inner` })
      await ow.packages.delete({ name: pkg })
      const action = await ow.actions.delete({ name })
      assert.equal(action.name, name)
      await rejectsWith(ow.actions.get({ name }), 404)
      await rejectsWith(ow.actions.delete({ name }), 404)
    }]
  ]
}

// The pytest runner may seed activation records (there is no invoker in this suite) and say how many.
const SEEDED = process.env.COMPAT_ACTIVATIONS ? Number(process.env.COMPAT_ACTIVATIONS) : null

const activations = () => [
  ['activations.list returns an array (possibly empty) of this namespace', async () => {
    const list = await ow.activations.list()
    assert.ok(Array.isArray(list))
    if (SEEDED !== null) assert.equal(list.length, SEEDED, JSON.stringify(list))
    for (const item of list) {
      assert.equal(item.namespace, NS)
      assert.equal(item.exec, undefined)
    }
  }],
  ['activations.get, .result and .logs read each listed record', async () => {
    for (const item of await ow.activations.list()) {
      const record = await ow.activations.get({ name: item.activationId })
      assert.equal(record.activationId, item.activationId)
      assert.equal(record.namespace, NS)
      assert.equal(typeof record.response.success, 'boolean')
      const result = await ow.activations.result({ name: item.activationId })
      assert.equal(result.status, record.response.status)
      assert.equal(result.success, record.response.success)
      assert.deepEqual(result.result, record.response.result)
      const logs = await ow.activations.logs({ name: item.activationId })
      assert.deepEqual(logs.logs, record.logs)
    }
  }],
  ['activations.list with count returns {activations: N}', async () => {
    const counted = await ow.activations.list({ count: true })
    assert.ok(Number.isInteger(counted.activations), JSON.stringify(counted))
  }],
  ['activations.list takes name, skip, limit, since, upto, docs', async () => {
    const list = await ow.activations.list({ name: 'anything', skip: 0, limit: 5, since: 0, upto: Date.now(), docs: true })
    assert.ok(Array.isArray(list))
  }],
  ['activations.get of an unknown id is 404', async () => {
    await rejectsWith(ow.activations.get({ name: '0123456789abcdef0123456789abcdef' }), 404)
  }]
]

const errors = () => [
  ['a wrong key is 401', async () => {
    const wrong = openwhisk({ apihost: process.env.__OW_API_HOST, api_key: process.env.__OW_API_KEY + 'x' })
    await rejectsWith(wrong.triggers.list(), 401)
  }],
  ['another namespace is 403', async () => {
    await rejectsWith(ow.triggers.list({ namespace: `not-${NS}` }), 403)
  }]
]

// The whisk.system catalog, as the client's own integration tests use it (actions.test.js invokes
// /whisk.system/utils/sort, triggers.test.js fires through a rule to /whisk.system/utils/echo). Needs a
// server that runs actions (a standalone with Podman): tests/e2e/test_catalog_standalone.py runs it.
const SYSTEM = process.env.COMPAT_SYSTEM_NAMESPACE || 'whisk.system'

// The activation of `action` that `rule` started, read from a trigger record's logs once it is stored.
async function ruleRun (triggerActivation, deadlineMs = 30000) {
  const record = await eventually(triggerActivation, deadlineMs)
  assert.equal(record.logs.length, 1, JSON.stringify(record.logs))
  const line = JSON.parse(record.logs[0])
  assert.equal(line.success, true, record.logs[0])
  return { line, run: await eventually(line.activationId, deadlineMs) }
}

const catalog = () => {
  const [trigger, rule, seq] = ['cat-trigger', 'cat-rule', 'cat-seq'].map(n => `compat-${n}-${suffix}`)
  let fired = null
  return [
    ['packages.get of /whisk.system/utils lists its actions', async () => {
      const pkg = await ow.packages.get({ name: `/${SYSTEM}/utils` })
      assert.equal(pkg.publish, true)
      for (const name of ['echo', 'sort', 'split', 'head']) {
        assert.ok(pkg.actions.some(a => a.name === name), `${name} missing: ${JSON.stringify(pkg.actions)}`)
      }
    }],
    ['actions.invoke of /whisk.system/utils/sort, blocking, result', async () => {
      const result = await ow.actions.invoke({
        name: `/${SYSTEM}/utils/sort`,
        params: { lines: ['b', 'c', 'a'] },
        blocking: true,
        result: true
      })
      assert.deepEqual(result, { lines: ['a', 'b', 'c'], length: 3 })
    }],
    ['triggers.invoke with a rule to /whisk.system/utils/echo resolves to {activationId}', async () => {
      await ow.triggers.create({ name: trigger })
      await ow.rules.create({ name: rule, trigger, action: `/${SYSTEM}/utils/echo` })
      const answer = await ow.triggers.invoke({ name: trigger, params: { hello: 'catalog' } })
      assert.deepEqual(Object.keys(answer), ['activationId'], JSON.stringify(answer))
      assert.match(answer.activationId, ACTIVATION_ID)
      fired = answer.activationId
    }],
    ['the rule\'s echo activation appears with the fired payload', async () => {
      const { line, run } = await ruleRun(fired)
      assert.equal(line.action, `${SYSTEM}/utils/echo`)
      assert.equal(run.name, 'echo')
      assert.equal(run.namespace, NS)
      assert.equal(run.response.success, true)
      assert.equal(run.response.result.hello, 'catalog')
      await ow.rules.delete({ name: rule })
      await ow.triggers.delete({ name: trigger })
    }],
    ['a sequence split -> sort -> head of catalog actions returns the right result', async () => {
      const components = ['split', 'sort', 'head'].map(a => `/${SYSTEM}/utils/${a}`)
      await ow.actions.create({ name: seq, sequence: components })
      const result = await ow.actions.invoke({
        name: seq,
        params: { payload: 'pear,apple,fig', separator: ',' },
        blocking: true,
        result: true
      })
      // Each component gets only its predecessor's result: head sees no `num` and takes its default, 1.
      assert.deepEqual(result, { lines: ['apple'], num: 1 })
      await ow.actions.delete({ name: seq })
    }]
  ]
}

// The feed lifecycle as the client's feeds.test.js drives it on /whisk.system/alarms/alarm: each call is a
// blocking invoke of the feed action, answered by the feeds role. Needs a standalone (runs with `catalog`).
const feeds = () => {
  const trigger = `compat-feed-${suffix}`
  const feed = `/${SYSTEM}/alarms/alarm`
  return [
    ['feeds.create on /whisk.system/alarms/alarm succeeds', async () => {
      await ow.triggers.create({ name: trigger, trigger: { annotations: [{ key: 'feed', value: feed }] } })
      const created = await ow.feeds.create({ name: feed, trigger, params: { cron: '0 0 1 1 *' } })
      assert.equal(created.response.success, true, JSON.stringify(created.response))
    }],
    ['feeds.get reads its config and health', async () => {
      const read = await ow.feeds.get({ name: feed, trigger })
      assert.equal(read.response.success, true, JSON.stringify(read.response))
      assert.equal(read.response.result.config.cron, '0 0 1 1 *')
      assert.equal(read.response.result.status.active, true)
    }],
    ['feeds.update changes it', async () => {
      const updated = await ow.feeds.update({ name: feed, trigger, params: { cron: '0 0 2 1 *' } })
      assert.equal(updated.response.success, true, JSON.stringify(updated.response))
      const read = await ow.feeds.get({ name: feed, trigger })
      assert.equal(read.response.result.config.cron, '0 0 2 1 *')
    }],
    ['feeds.delete removes it', async () => {
      const deleted = await ow.feeds.delete({ name: feed, trigger })
      assert.equal(deleted.response.success, true, JSON.stringify(deleted.response))
      // A failed feed action answers 502 with its record, whose result says why (as OpenWhisk's alarms do).
      const gone = await ow.feeds.get({ name: feed, trigger }).then(() => null, err => err)
      assert.ok(gone, 'reading a deleted feed fails')
      assert.equal(gone.statusCode, 502)
      assert.equal(gone.error.response.result.statusCode, 404, JSON.stringify(gone.error.response))
      await ow.triggers.delete({ name: trigger })
    }]
  ]
}

const GROUPS = { namespaces, packages, triggers, rules, actions, activations, errors, catalog, feeds }

async function main () {
  const only = process.argv.slice(2)
  let passed = 0
  let failed = 0
  for (const [group, steps] of Object.entries(GROUPS)) {
    // The catalog and feeds groups need a server that runs actions and feeds: they run only when named.
    if (only.length ? !only.includes(group) : ['catalog', 'feeds'].includes(group)) continue
    let broken = null
    for (const [name, step] of steps()) {
      const label = `${group}: ${name}`
      if (broken) {
        console.log(`not ok - ${label} (not run: "${broken}" failed)`)
        failed++
        continue
      }
      try {
        await step()
        console.log(`ok - ${label}`)
        passed++
      } catch (err) {
        console.log(`not ok - ${label}: ${String(err.message).split('\n').join(' ')}`)
        failed++
        broken = name
      }
    }
  }
  console.log(`${passed} passed, ${failed} failed`)
  process.exitCode = failed ? 1 : 0
}

main()
