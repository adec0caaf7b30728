"""What the OpenAPI document declares for each path (its methods and their query
parameters), and the checks built on it: a query parameter no route takes is a 422, and a 405
lists every method of the path."""

from __future__ import annotations

import re

from fastapi import FastAPI, Request

from watcher.api.errors import ApiError

_HTTP_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})

# (path regex, {METHOD: names of its query parameters}) per documented path.
RouteTable = list[tuple[re.Pattern[str], dict[str, frozenset[str]]]]


def route_table(app: FastAPI) -> RouteTable:
    """What the OpenAPI document declares, by path: methods and their query parameters."""
    table: RouteTable | None = getattr(app.state, "route_table", None)
    if table is None:
        table = []
        for template, operations in app.openapi().get("paths", {}).items():
            pieces = re.split(r"\{[^}]+\}", template)
            regex = re.compile("^" + "[^/]+".join(re.escape(p) for p in pieces) + "$")
            methods: dict[str, frozenset[str]] = {}
            for method, operation in operations.items():
                if method.upper() not in _HTTP_METHODS:
                    continue
                names = frozenset(
                    p["name"] for p in operation.get("parameters", []) if p.get("in") == "query"
                )
                methods[method.upper()] = names
            table.append((regex, methods))
        app.state.route_table = table
    return table


def allowed_methods(request: Request) -> list[str]:
    """Every method any route of this path accepts."""
    found: set[str] = set()
    for regex, methods in route_table(request.app):
        if regex.match(request.scope["path"]):
            found |= set(methods)
    return sorted(found)


def reject_unknown_query(request: Request) -> None:
    """A dependency: a query parameter the route does not know, or one given twice, is a 422
    naming it (a typo like `?stauts=completed` must not silently return everything)."""
    if not request.query_params:
        return
    known: frozenset[str] | None = None
    for regex, methods in route_table(request.app):
        if regex.match(request.scope["path"]) and request.method in methods:
            known = methods[request.method]
            break
    if known is None:
        return
    unknown = sorted({name for name in request.query_params if name not in known})
    repeated = sorted({name for name in known if len(request.query_params.getlist(name)) > 1})
    if repeated and not unknown:
        raise ApiError(
            422,
            "validation_error",
            "query parameter(s) given more than once: " + ", ".join(map(repr, repeated)),
            fields=[(f"query.{name}", "given more than once") for name in repeated],
        )
    if unknown:
        raise ApiError(
            422,
            "validation_error",
            "unknown query parameter(s): "
            + ", ".join(repr(n) for n in unknown)
            + (f"; this route takes {', '.join(sorted(known))}" if known else "; none expected"),
            fields=[(f"query.{name}", "unknown parameter") for name in unknown],
        )
