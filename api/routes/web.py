"""Web actions: `/api/v1/web/{ns}/{pkg|default}/{action}[.ext][/rest]`, any method, credentials optional.

The action runs as a blocking invoke in its owner's namespace (OpenWhisk's "runs as the action owner"), through
the same gateway as `POST …/actions/{name}`; the request is turned into its arguments by api/web_request.py and
its result into the HTTP answer by api/web_response.py.
"""

from __future__ import annotations

from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response

from api.auth import Identity, authenticate
from api.body import read_bytes
from api.context import state
from api.errors import error_response, status_of
from api.gateway import ACTIVATION_ID_HEADER
from api.request_id import request_id_of
from api.routing import ApiRoute, Operation
from api.trace import traceparent_of
from api.web_request import (
    EXTENSION_NOT_SUPPORTED,
    HTTP,
    RAW_HTTP,
    REQUIRE_WHISK_AUTH,
    WEB_CUSTOM_OPTIONS,
    WEB_EXPORT,
    WebPath,
    WebRequest,
    auth_allows,
    is_on,
    parse_web_path,
    request_arguments,
    split_extension,
    unknown_extension,
)
from api.web_response import ERROR_PROCESSING_REQUEST, PROPERTY_NOT_FOUND, RESPONSE_NOT_READY, project, shape
from broker import kinds, trace_context
from broker.action_refs import ResolvedAction, action_arguments, resolve_component
from broker.activations import APPLICATION_ERROR, SUCCESS, Activation, new_activation_id
from broker.clock import now_ms
from broker.entities import validate_name
from broker.errors import (
    BadRequest,
    Forbidden,
    NotAcceptable,
    NotFound,
    SquallError,
    Unauthorized,
    WrongCollection,
)
from broker.invocations import Invocation
from broker.limits import PAYLOAD_MAX_BYTES
from broker.params import lookup

PATH: Final = "/api/v1/web/{namespace}/{package}/{action:path}"
METHODS: Final = ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")  # Starlette adds HEAD to GET

# OpenWhisk's CORS answer for web actions (CorsSettings.WebActions); Allow-Headers echoes a preflight's
# Access-Control-Request-Headers.
ALLOW_METHODS: Final = "OPTIONS, GET, DELETE, POST, PUT, HEAD, PATCH"
ALLOW_HEADERS: Final = "Authorization, Origin, X-Requested-With, Content-Type, Accept, User-Agent"


def cors_headers(request: Request) -> dict[str, str]:
    return {
        "Access-Control-Allow-Origin": "*",
        "Access-Control-Allow-Methods": ALLOW_METHODS,
        "Access-Control-Allow-Headers": request.headers.get("access-control-request-headers", ALLOW_HEADERS),
    }


# A tenant's page is served from the API's own origin: sandboxed into an origin of its own, its scripts cannot
# read what the API's origin keeps (the console's key in session storage) nor call the API as the signed-in user.
# Everything else a page does (scripts, forms, pop-ups, downloads) stays allowed. An action may set its own policy.
SANDBOX: Final = "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads"


async def web_action(request: Request) -> Response:
    # CORS headers go on every answer, errors included, unless the action answers CORS itself.
    cors = cors_headers(request)
    try:
        response = await _serve(request, cors)
    except SquallError as exc:
        response = error_response(request, status_of(exc), exc.message)
    response.headers.update(cors)
    if "content-security-policy" not in response.headers:
        response.headers["Content-Security-Policy"] = SANDBOX
    return response


async def _serve(request: Request, cors: dict[str, str]) -> Response:
    params = request.path_params
    web = parse_web_path(params["namespace"], params["package"], params["action"])
    caller = await _caller(request)
    resolved = await _resolve(request, web, params["action"].partition("/")[0])
    annotations = resolved.action.annotations
    throttles = state(request).throttles
    if caller is None:
        await throttles.check_web(web.namespace)
    custom_options = is_on(annotations, WEB_CUSTOM_OPTIONS)
    if custom_options:
        cors.clear()
    elif request.method == "OPTIONS":
        return Response(status_code=200)
    headers = {k.lower(): v for k, v in request.headers.items()}
    # OPTIONS reaches an action that answers it itself even without credentials (a browser's preflight has none).
    if request.method != "OPTIONS" and not auth_allows(
        lookup(annotations, REQUIRE_WHISK_AUTH), headers, caller is not None
    ):
        raise Unauthorized()
    body = await read_bytes(request, PAYLOAD_MAX_BYTES)
    web_request = WebRequest(
        method=request.method,
        headers=list(request.headers.items()),
        path=web.rest,
        query=list(request.query_params.multi_items()),
        query_string=request.url.query,
        body=body,
        content_type=request.headers.get("content-type"),
    )
    payload = request_arguments(
        web_request, None if caller is None else caller.namespace, is_on(annotations, RAW_HTTP)
    )
    return await _run(request, web, resolved, payload)


async def _caller(request: Request) -> Identity | None:
    """The authenticated caller, or None: invalid credentials make an anonymous caller, as in OpenWhisk."""
    if "authorization" not in request.headers:
        return None
    try:
        return await authenticate(request, state(request).keys)
    except Unauthorized:
        return None


async def _resolve(request: Request, web: WebPath, segment: str) -> ResolvedAction:
    """The exported action the URL names; OpenWhisk's 404 for anything missing or not exported."""
    try:
        for part in (web.namespace, web.package or "default", web.name):
            validate_name(part)
        resolved = await resolve_component(state(request).gateway.actions, web.action_ref, web.namespace)
    except (NotFound, WrongCollection, BadRequest, Forbidden):
        resolved = None
    if resolved is not None and is_on(resolved.action.annotations, WEB_EXPORT):
        return resolved
    extension = unknown_extension(segment)
    if resolved is None and extension is not None and await _exported(request, web, segment, extension):
        raise NotAcceptable(EXTENSION_NOT_SUPPORTED)
    raise NotFound()


async def _exported(request: Request, web: WebPath, segment: str, extension: str) -> bool:
    """Whether the URL's segment without its `.xyz` names an exported action: then `.xyz` was meant as an
    extension, and the answer says which ones exist (OpenWhisk would only say 404)."""
    name, _ = split_extension(segment[: -len(extension)])
    base = WebPath(namespace=web.namespace, package=web.package, name=name, extension=HTTP, rest="")
    try:
        resolved = await resolve_component(state(request).gateway.actions, base.action_ref, web.namespace)
    except (NotFound, WrongCollection, BadRequest, Forbidden):
        return False
    return is_on(resolved.action.annotations, WEB_EXPORT)


async def _run(request: Request, web: WebPath, resolved: ResolvedAction, payload: dict[str, Any]) -> Response:
    action = resolved.action
    shared = state(request)
    kinds.check_invocable(action.exec.kind)
    arguments = action_arguments(action, resolved.parameters, payload)  # 400 when it overrides a final one
    owner = web.namespace
    # The owner's namespace pays for the run, whoever calls, as in OpenWhisk.
    await shared.throttles.check_invoke(owner)
    invocation = Invocation(
        activationId=new_activation_id(),
        namespace=owner,
        action=f"{action.namespace}/{action.name}",
        params=arguments,
        blocking=True,
        subject=owner,
        transaction_id=request_id_of(request),
        binding=resolved.binding,
        published=now_ms(),
        traceparent=trace_context.child(traceparent_of(request)),
    )
    aid = invocation.activationId

    async def lookup_record() -> Activation | None:
        return await shared.activations.get(owner, aid)

    record = await shared.gateway.invoke(invocation, shared.settings.web_action_wait_s, lookup_record)
    if record is None:
        answer = error_response(request, 202, RESPONSE_NOT_READY)
        answer.headers[ACTIVATION_ID_HEADER] = aid
        return answer
    try:
        response = _answer(record, web)
    except SquallError as exc:
        response = error_response(request, status_of(exc), exc.message)
    response.headers[ACTIVATION_ID_HEADER] = aid
    return response


def _answer(record: Activation, web: WebPath) -> Response:
    """The activation's result as the URL's extension shapes it: an application error answers its `error`
    field the same way; any other failure is OpenWhisk's 400."""
    status = record.response.status
    if status not in (SUCCESS, APPLICATION_ERROR):
        raise BadRequest(ERROR_PROCESSING_REQUEST)
    result = record.response.result
    if status == APPLICATION_ERROR:
        if not isinstance(result, dict) or "error" not in result:
            raise NotFound(PROPERTY_NOT_FOUND)
        result = result["error"]
    value = result if web.extension == HTTP else project(result, web.projection)
    answer = shape(value, web.extension)
    response = Response(answer.body, status_code=answer.status, media_type=answer.content_type)
    for name, text in answer.headers:
        response.headers.append(name, text)
    return response


OPERATION: Final = Operation(
    summary=(
        "Run a web-exported action (annotation `web-export`) and answer its result as the extension says: "
        "`.http` (default) reads `{statusCode, headers, body}`, `.json` `.html` `.svg` `.text` a field of the "
        "result (`/rest/of/path` projects one); credentials are optional unless `require-whisk-auth` asks"
    ),
    tag="Web actions",
    response=Any,
    content_type="*/*",
    other_responses={202: Any, 204: None},
    errors=(400, 401, 404, 406, 413, 429, 503),
    auth=False,
)

routes = [ApiRoute(PATH, web_action, method, OPERATION) for method in METHODS]
