// What a feed action of the catalog answers when it runs in a container, as it would if a rule or a
// sequence named it: Squall's feeds role serves these actions itself, when they are invoked directly.
function main () {
  const name = process.env.__OW_ACTION_NAME || 'this feed action'
  return {
    error: `${name} is served by Squall's feeds role; invoke it directly ` +
      '(POST /api/v1/namespaces/<namespace>/actions/<package>/<feed>, blocking, with a lifecycleEvent), ' +
      'not from a rule or a sequence.'
  }
}
