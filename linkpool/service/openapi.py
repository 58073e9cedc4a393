"""The OpenAPI 3 document of the service, written by hand (a test holds it to the routes).

Starlette has no generator; FastAPI's would cost pydantic and a slower request path for one
JSON document that changes only when the API does.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from linkpool import __name__ as package_name

VERSION = "1.0.0"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


_POOL = {"name": "pool", "in": "path", "required": True, "schema": {"type": "string"}}
_KEY = {"name": "key", "in": "path", "required": True, "schema": {"type": "string"}}
_SECURED: list[dict[str, list[str]]] = [{"bearer": []}]
_AUTH_ERRORS = {
    "401": _error("no API key, or not a valid one"),
    "403": _error("the key may not use this pool"),
}
_RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["type", "message"],
                "properties": {
                    "type": {"type": "string", "description": "the linkpool error class"},
                    "message": {"type": "string"},
                    "field": {"type": "string", "nullable": True},
                    "pool": {"type": "string"},
                    "key": {"type": "string"},
                    "too_old": {"type": "integer"},
                },
            }
        },
    },
    "ClaimRequest": {
        "type": "object",
        "required": ["recipient"],
        "additionalProperties": False,
        "properties": {
            "recipient": {"type": "string", "minLength": 1, "maxLength": 255},
            "data": {"type": "object", "nullable": True, "description": "at most 64 KiB as JSON"},
        },
    },
    "Claim": {
        "type": "object",
        "properties": {
            "url": {"type": "string", "description": "the personal link: a bearer credential"},
            "expires_at": {"type": "string", "format": "date-time"},
            "link_id": {"type": "integer"},
            "pool": {"type": "string"},
            "recipient": {"type": "string"},
            "key": {"type": "string", "nullable": True},
            "data": {"type": "object", "nullable": True},
            "contact_id": {"type": "string"},
            "contact_lookup_id": {"type": "string", "nullable": True},
            "claimed_at": {"type": "string", "format": "date-time"},
            "replayed": {"type": "boolean"},
        },
    },
    "PoolStatus": {
        "type": "object",
        "description": "one pool's entry of `linkpool status --json` (docs/status.md)",
        "additionalProperties": True,
    },
}

_PATHS: dict[str, Any] = {
    "/v1/pools/{pool}/claims": {
        "post": {
            "summary": "Claim one link of the pool for a recipient",
            "security": _SECURED,
            "parameters": [
                _POOL,
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "maxLength": 255},
                },
            ],
            "requestBody": {"required": True, **_json(_ref("ClaimRequest"), "the claim")},
            "responses": {
                "201": _json(_ref("Claim"), "claimed"),
                "200": _json(_ref("Claim"), "a repeat of a key: the first claim, replayed"),
                **_AUTH_ERRORS,
                "404": _error("UnknownPool"),
                "409": _error("IdempotencyConflict: the key was used with other recipient or data"),
                "413": _error("PayloadTooLarge"),
                "415": _error("UnsupportedMediaType: the body is not JSON"),
                "422": _error("InvalidClaim: the field is named and the limit stated"),
                "503": {**_error("PoolExhausted or DatabaseError"), "headers": _RETRY_AFTER},
            },
        }
    },
    "/v1/pools/{pool}/claims/{key}": {
        "get": {
            "summary": "The claim made with this idempotency key",
            "security": _SECURED,
            "parameters": [_POOL, _KEY],
            "responses": {
                "200": _json(_ref("Claim"), "the claim"),
                **_AUTH_ERRORS,
                "404": _error("ClaimNotFound or UnknownPool"),
                "503": _error("DatabaseError"),
            },
        }
    },
    "/v1/pools": {
        "get": {
            "summary": "Every pool the key may use, as `linkpool status --json`",
            "security": _SECURED,
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "properties": {
                            "pools": {"type": "object", "additionalProperties": _ref("PoolStatus")}
                        },
                    },
                    "the status document",
                ),
                "401": _AUTH_ERRORS["401"],
                "503": _error("DatabaseError"),
            },
        }
    },
    "/v1/pools/{pool}": {
        "get": {
            "summary": "One pool's status",
            "security": _SECURED,
            "parameters": [_POOL],
            "responses": {
                "200": _json(_ref("PoolStatus"), "the pool's entry, with its name as `pool`"),
                **_AUTH_ERRORS,
                "404": _error("UnknownPool"),
                "503": _error("DatabaseError"),
            },
        }
    },
    "/healthz": {
        "get": {"summary": "The process answers", "responses": {"200": {"description": "ok"}}}
    },
    "/readyz": {
        "get": {
            "summary": "The database answers and is migrated",
            "responses": {
                "200": {"description": "ready"},
                "503": _error("DatabaseError or SchemaNotMigrated"),
            },
        }
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus text format",
            "responses": {
                "200": {"description": "metrics", "content": {"text/plain": {"schema": {}}}}
            },
        }
    },
    "/openapi.json": {
        "get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3"}}}
    },
}


@cache
def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {"title": f"{package_name} service", "version": VERSION},
        "paths": _PATHS,
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
