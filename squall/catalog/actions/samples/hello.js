// /whisk.system/samples/hello: logs a greeting for `payload` and answers an empty object.
function main (params) {
  console.log('hello', params.payload + '!')
  return {}
}
