// /whisk.system/utils/split: `payload` (as a string) cut at `separator`, a string or, by default, a line
// break (\n or \r\n), into `lines`; the original `payload` is answered alongside.
function main (params) {
  const separator = params.separator || /\r?\n/
  const lines = String(params.payload).split(separator)
  const result = { lines, payload: params.payload }
  console.log('split: returning ' + JSON.stringify(result))
  return result
}
