// /whisk.system/utils/hosturl: the URL that invokes an action (POST with a key), fires a trigger
// (`trigger: true`), or calls a web action (`web: true`, extension `ext`, default .json) of the
// invoking namespace, built from the API host the platform gives every action. Web actions are at
// /api/v1/web/, where OpenWhisk serves them today (its catalog's action still names the retired
// /api/v1/experimental/web/).
const WEB_EXTENSIONS = ['.json', '.text', '.html', '.http']

function main (params) {
  const host = process.env.__OW_API_HOST
  const namespace = process.env.__OW_NAMESPACE
  const web = params.web === true
  const path = params.path
  if (web && params.trigger) {
    return { error: 'triggers are not allowed for web actions.' }
  }
  if (web && params.ext && !WEB_EXTENSIONS.includes(params.ext)) {
    return { error: 'extension for web action must be one of [".json", ".text", ".html", ".http"].' }
  }
  if (!web && params.trigger && path && path.includes('/')) {
    return { error: 'triggers are not allowed in packages.' }
  }
  const base = web
    ? `${host}/api/v1/web/${namespace}`
    : `${host}/api/v1/namespaces/${namespace}/${params.trigger === true ? 'triggers' : 'actions'}`
  if (!path) {
    return { url: base }
  }
  // A web action outside any package lives in the package called `default`.
  const where = web && !path.includes('/') ? `default/${path}` : path
  return { url: `${base}/${where}${web ? (params.ext || '.json') : ''}` }
}
