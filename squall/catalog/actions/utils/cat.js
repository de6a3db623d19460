// /whisk.system/utils/cat: the `lines` array, and the same lines joined by newlines as `payload`;
// every other parameter is left out of the result.
function main (params) {
  const lines = params.lines || []
  const result = { lines, payload: lines.join('\n') }
  console.log('cat: returning ' + JSON.stringify(result))
  return result
}
