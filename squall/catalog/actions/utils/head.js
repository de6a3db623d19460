// /whisk.system/utils/head: the first `num` (default 1) elements of `lines`, and the `num` used.
function main (params) {
  const lines = params.lines || []
  const num = params.num || 1
  const first = lines.slice(0, num)
  console.log(`head: the first ${num} of ${lines.length} lines`)
  return { lines: first, num }
}
