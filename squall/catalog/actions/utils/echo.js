// /whisk.system/utils/echo: answers with exactly the parameters it was given.
function main (params) {
  return params
}
