// /whisk.system/utils/namespace: the namespace of the key that invoked this action (not whisk.system).
function main () {
  return { namespace: process.env.__OW_NAMESPACE }
}
