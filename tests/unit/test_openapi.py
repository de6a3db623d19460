"""The OpenAPI generator's decisions, on hand-made routes: parameters, bodies, statuses, schemas."""

from __future__ import annotations

from typing import Any

import msgspec
from openapi_spec_validator import validate
from starlette.requests import Request
from starlette.responses import Response

from api.openapi import build_document, error_statuses, path_param_type, query_param
from api.routing import ApiRoute, Operation, Param


class Thing(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    size: int = 0


class Accepted(msgspec.Struct, frozen=True, kw_only=True):
    activationId: str  # OpenWhisk's field name


async def handler(request: Request) -> Response:
    return Response()


def _route(path: str, method: str = "GET", **kwargs: Any) -> ApiRoute:
    kwargs.setdefault("summary", "do it")
    kwargs.setdefault("tag", "Things")
    return ApiRoute(path, handler, method, Operation(**kwargs))


def test_path_param_types_follow_the_convertor() -> None:
    route = _route("/t/{a}/{b:int}/{c:path}/{d:uuid}")
    conv = route.param_convertors
    assert path_param_type(conv["a"]) == {"type": "string"}
    assert path_param_type(conv["b"]) == {"type": "integer", "minimum": 0}
    assert path_param_type(conv["c"]) == {"type": "string"}
    assert path_param_type(conv["d"]) == {"type": "string", "format": "uuid"}


def test_query_param_carries_bounds_and_enum() -> None:
    p = query_param(Param(name="limit", type="integer", minimum=0, maximum=200, description="how many"))
    assert p == {
        "name": "limit",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 0, "maximum": 200},
        "description": "how many",
    }
    e = query_param(Param(name="status", enum=("active", "inactive"), required=True))
    assert e["schema"] == {"type": "string", "enum": ["active", "inactive"]}
    assert e["required"] is True


def test_unauthenticated_plain_route_answers_only_500() -> None:
    assert error_statuses(_route("/ping", auth=False)) == [500]


def test_error_statuses_add_what_the_shared_machinery_raises() -> None:
    route = _route(
        "/ns/{namespace}/things/{name:path}",
        "PUT",
        body=Thing,
        query=(Param(name="overwrite", type="boolean"),),
        errors=(409,),
    )
    # 401 auth, 403 other namespace, 400/413 body, 404 from the `{namespace}` segment, 409 declared.
    assert error_statuses(route) == [400, 401, 403, 404, 409, 413, 500]


def test_a_path_only_segment_does_not_add_404_but_a_plain_one_does() -> None:
    assert error_statuses(_route("/files/{rest:path}", auth=False)) == [400, 500]
    assert error_statuses(_route("/files/{one}", auth=False)) == [400, 404, 500]


def test_document_merges_methods_and_describes_bodies_and_responses() -> None:
    routes = [
        _route("/things/{name}", "GET", response=Thing, errors=(404,)),
        _route(
            "/things/{name}",
            "POST",
            body=dict[str, Any],
            response=Thing,
            other_responses={202: Accepted, 204: None},
        ),
        _route("/things", "GET", response=list[Thing], tag="More"),
    ]
    doc = build_document(routes)
    validate(doc)  # type: ignore[arg-type]
    item = doc["paths"]["/things/{name}"]
    assert set(item) == {"get", "post"}
    post = item["post"]
    assert post["requestBody"]["required"] is False
    assert post["requestBody"]["content"]["application/json"]["schema"]["type"] == "object"
    assert post["responses"]["202"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Accepted"
    }
    assert "content" not in post["responses"]["204"]
    assert doc["paths"]["/things"]["get"]["responses"]["200"]["content"]["application/json"]["schema"] == {
        "type": "array",
        "items": {"$ref": "#/components/schemas/Thing"},
    }
    thing = doc["components"]["schemas"]["Thing"]
    assert thing["required"] == ["name"]
    assert [t["name"] for t in doc["tags"]] == ["Things", "More"]
    assert set(doc["components"]["responses"]) == {
        "400",
        "401",
        "404",
        "409",
        "413",
        "500",
    }  # 409: a `{name}` of another collection


def test_operation_ids_fall_back_to_method_and_path_when_handlers_share_a_name() -> None:
    doc = build_document([_route("/a/{x}"), _route("/b", "DELETE")])
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert ids == ["get_a_x", "delete_b"]


def test_bare_object_values_become_an_unconstrained_schema() -> None:
    doc = build_document([_route("/info", response=dict[str, object], auth=False)])
    schema = doc["paths"]["/info"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema == {"type": "object", "additionalProperties": {"description": "Any JSON value"}}


def test_a_text_response_is_documented_with_its_content_type() -> None:
    doc = build_document([_route("/ping", response=str, content_type="text/plain", auth=False)])
    assert doc["paths"]["/ping"]["get"]["responses"]["200"]["content"] == {
        "text/plain": {"schema": {"type": "string"}}
    }
