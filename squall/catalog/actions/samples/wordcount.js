// /whisk.system/samples/wordcount: how many space-separated words the string `payload` has.
function main (params) {
  const text = params.payload
  if (typeof text !== 'string') {
    return { error: "Expected an argument 'payload' of type 'string'." }
  }
  const count = text.split(' ').length
  console.log(`The message '${text}' has`, count, 'words')
  return { count }
}
