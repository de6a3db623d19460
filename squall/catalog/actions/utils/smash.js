// /whisk.system/utils/smash: every parameter but `$fieldName`, nested under the property `$fieldName` names.
function main (params) {
  const field = params.$fieldName
  if (typeof field !== 'string') {
    return { error: "Expected an argument '$fieldName' of type 'string'." }
  }
  const rest = Object.assign({}, params)
  delete rest.$fieldName
  return { [field]: rest }
}
