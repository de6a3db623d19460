// /whisk.system/utils/sort: `lines` sorted as JavaScript's default sort orders them (by their string
// form, so 10 comes before 9), and how many there are.
function main (params) {
  const lines = params.lines || []
  console.log('sort: before ' + JSON.stringify(lines))
  lines.sort()
  console.log('sort: after ' + JSON.stringify(lines))
  return { lines, length: lines.length }
}
