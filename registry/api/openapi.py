"""The OpenAPI 3.1 description of the ``/v2/`` API, served at ``/openapi.json``.

Written by hand: the routes take raw requests (streamed bodies, multi-segment names) that
FastAPI cannot describe on its own. It is precise enough for schemathesis to generate requests
from it and to check every response against it (``tests/api/test_openapi.py``). Repository
names are described as one path segment here; the server also accepts ``a/b/c``.
"""

from __future__ import annotations

from typing import Any

from registry import __version__
from registry.oci.manifest import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    MAX_MANIFEST_SIZE,
    OCI_INDEX,
    OCI_MANIFEST,
)

_MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST)
_ERROR_REF = {"$ref": "#/components/schemas/Errors"}


def _error_content() -> dict[str, Any]:
    return {"application/json": {"schema": _ERROR_REF}}


def _errors(*statuses: str) -> dict[str, Any]:
    """Error responses: the spec's error document, for every 4xx (and 503)."""
    described = {"4XX": {"description": "an OCI error", "content": _error_content()}}
    for status in statuses:
        described[status] = {"description": "an OCI error", "content": _error_content()}
    return described


def _param(name: str, where: str, schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required or where == "path", "schema": schema}


NAME = _param("name", "path", {"$ref": "#/components/schemas/Name"})
DIGEST = _param("digest", "path", {"$ref": "#/components/schemas/Digest"})
REFERENCE = _param("reference", "path", {"$ref": "#/components/schemas/Reference"})
UPLOAD = _param("uuid", "path", {"type": "string", "pattern": "^[0-9A-Za-z-]{1,64}$"})
PAGE = [
    _param("n", "query", {"type": "integer", "minimum": 0, "maximum": 100000}),
    _param("last", "query", {"type": "string", "maxLength": 256}),
]
_EMPTY = {"description": "no body"}


def _upload_headers() -> dict[str, Any]:
    return {
        "Location": {"schema": {"type": "string"}, "required": True},
        "Range": {"schema": {"type": "string", "pattern": "^0-[0-9]+$"}, "required": True},
        "Docker-Upload-UUID": {"schema": {"type": "string"}},
    }


def _blob_created() -> dict[str, Any]:
    return {
        "description": "the blob is stored and linked",
        "headers": {
            "Location": {"schema": {"type": "string"}, "required": True},
            "Docker-Content-Digest": {"schema": {"type": "string"}, "required": True},
        },
    }


def _manifest_content() -> dict[str, Any]:
    return {media_type: {"schema": {"type": "object"}} for media_type in _MANIFEST_TYPES}


def schema() -> dict[str, Any]:
    """The whole document."""
    octets = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "registry: OCI Distribution Spec v1.1",
            "version": __version__,
            "description": "Every error is {errors: [{code, message, detail}]}.",
        },
        "security": [{"basic": []}],
        "paths": {
            "/v2/": {
                "get": {
                    "operationId": "ping",
                    "responses": {
                        "200": {
                            "description": "the API is here and the caller may use it",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        **_errors(),
                    },
                }
            },
            "/v2/_catalog": {
                "get": {
                    "operationId": "catalog",
                    "parameters": PAGE,
                    "responses": {
                        "200": {
                            "description": "repositories, sorted",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["repositories"],
                                        "properties": {
                                            "repositories": {
                                                "type": "array",
                                                "items": {"type": "string"},
                                            }
                                        },
                                    }
                                }
                            },
                        },
                        **_errors(),
                    },
                }
            },
            "/v2/{name}/tags/list": {
                "get": {
                    "operationId": "listTags",
                    "parameters": [NAME, *PAGE],
                    "responses": {
                        "200": {
                            "description": "the repository's tags, sorted",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["name", "tags"],
                                        "properties": {
                                            "name": {"type": "string"},
                                            "tags": {"type": "array", "items": {"type": "string"}},
                                        },
                                    }
                                }
                            },
                        },
                        **_errors(),
                    },
                }
            },
            "/v2/{name}/manifests/{reference}": {
                "parameters": [NAME, REFERENCE],
                "get": {
                    "operationId": "getManifest",
                    "responses": {
                        "200": {"description": "the manifest", "content": _manifest_content()},
                        **_errors(),
                    },
                },
                "head": {
                    "operationId": "headManifest",
                    "responses": {"200": _EMPTY, **_errors()},
                },
                "put": {
                    "operationId": "putManifest",
                    "parameters": [
                        _param("tag", "query", {"$ref": "#/components/schemas/Tag"}),
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            media_type: {"schema": {"$ref": "#/components/schemas/Manifest"}}
                            for media_type in _MANIFEST_TYPES
                        },
                    },
                    "responses": {
                        "201": {
                            "description": "stored",
                            "headers": {
                                "Location": {"schema": {"type": "string"}, "required": True},
                                "Docker-Content-Digest": {
                                    "schema": {"type": "string"},
                                    "required": True,
                                },
                            },
                        },
                        **_errors(),
                    },
                },
                "delete": {
                    "operationId": "deleteManifest",
                    "responses": {"202": {"description": "deleted"}, **_errors()},
                },
            },
            "/v2/{name}/blobs/{digest}": {
                "parameters": [NAME, DIGEST],
                "get": {
                    "operationId": "getBlob",
                    "parameters": [_param("Range", "header", {"type": "string"})],
                    "responses": {
                        "200": {"description": "the blob", "content": octets},
                        "206": {"description": "a range of the blob", "content": octets},
                        "307": {"description": "fetch it from there (object storage)"},
                        **_errors(),
                    },
                },
                "head": {
                    "operationId": "headBlob",
                    "responses": {"200": _EMPTY, **_errors()},
                },
                "delete": {
                    "operationId": "deleteBlob",
                    "responses": {"202": {"description": "unlinked"}, **_errors()},
                },
            },
            "/v2/{name}/blobs/uploads/": {
                "post": {
                    "operationId": "startUpload",
                    "parameters": [
                        NAME,
                        _param("digest", "query", {"$ref": "#/components/schemas/Digest"}),
                        _param("mount", "query", {"$ref": "#/components/schemas/Digest"}),
                        _param("from", "query", {"$ref": "#/components/schemas/Name"}),
                    ],
                    "requestBody": {"required": False, "content": octets},
                    "responses": {
                        "201": _blob_created(),
                        "202": {"description": "session opened", "headers": _upload_headers()},
                        **_errors(),
                    },
                }
            },
            "/v2/{name}/blobs/uploads/{uuid}": {
                "parameters": [NAME, UPLOAD],
                "get": {
                    "operationId": "uploadStatus",
                    "responses": {
                        "204": {"description": "bytes so far", "headers": _upload_headers()},
                        **_errors(),
                    },
                },
                "patch": {
                    "operationId": "uploadChunk",
                    "parameters": [
                        _param(
                            "Content-Range",
                            "header",
                            {"type": "string", "pattern": "^[0-9]+-[0-9]+$"},
                        )
                    ],
                    "requestBody": {"required": True, "content": octets},
                    "responses": {
                        "202": {"description": "chunk stored", "headers": _upload_headers()},
                        **_errors(),
                    },
                },
                "put": {
                    "operationId": "finishUpload",
                    "parameters": [
                        _param("digest", "query", {"$ref": "#/components/schemas/Digest"}, True)
                    ],
                    "requestBody": {"required": False, "content": octets},
                    "responses": {"201": _blob_created(), **_errors()},
                },
                "delete": {
                    "operationId": "cancelUpload",
                    "responses": {"204": {"description": "cancelled"}, **_errors()},
                },
            },
            "/v2/{name}/referrers/{digest}": {
                "get": {
                    "operationId": "listReferrers",
                    "parameters": [
                        NAME,
                        DIGEST,
                        _param("artifactType", "query", {"type": "string", "maxLength": 255}),
                    ],
                    "responses": {
                        "200": {
                            "description": "an image index of the referrers",
                            "content": {
                                OCI_INDEX: {"schema": {"$ref": "#/components/schemas/Index"}}
                            },
                        },
                        **_errors(),
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {"basic": {"type": "http", "scheme": "basic"}},
            "schemas": {
                "Name": {
                    "type": "string",
                    "pattern": "^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$",
                    "maxLength": 64,
                },
                "Tag": {"type": "string", "pattern": "^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$"},
                "Digest": {"type": "string", "pattern": "^sha256:[a-f0-9]{64}$"},
                "Reference": {
                    "anyOf": [
                        {"$ref": "#/components/schemas/Tag"},
                        {"$ref": "#/components/schemas/Digest"},
                    ]
                },
                "Descriptor": {
                    "type": "object",
                    "required": ["mediaType", "digest", "size"],
                    "properties": {
                        "mediaType": {"type": "string"},
                        "digest": {"$ref": "#/components/schemas/Digest"},
                        "size": {"type": "integer", "minimum": 0},
                        "artifactType": {"type": "string"},
                    },
                },
                "Manifest": {
                    "type": "object",
                    "maxProperties": 16,
                    "required": ["schemaVersion"],
                    "properties": {
                        "schemaVersion": {"const": 2},
                        "mediaType": {"type": "string"},
                        "config": {"$ref": "#/components/schemas/Descriptor"},
                        "layers": {
                            "type": "array",
                            "maxItems": 4,
                            "items": {"$ref": "#/components/schemas/Descriptor"},
                        },
                        "manifests": {
                            "type": "array",
                            "maxItems": 4,
                            "items": {"$ref": "#/components/schemas/Descriptor"},
                        },
                    },
                    "description": f"at most {MAX_MANIFEST_SIZE} bytes",
                },
                "Index": {
                    "type": "object",
                    "required": ["schemaVersion", "manifests"],
                    "properties": {
                        "schemaVersion": {"const": 2},
                        "mediaType": {"const": OCI_INDEX},
                        "manifests": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/Descriptor"},
                        },
                    },
                },
                "Errors": {
                    "type": "object",
                    "required": ["errors"],
                    "properties": {
                        "errors": {
                            "type": "array",
                            "minItems": 1,
                            "items": {
                                "type": "object",
                                "required": ["code", "message", "detail"],
                                "properties": {
                                    "code": {"type": "string", "pattern": "^[A-Z_]+$"},
                                    "message": {"type": "string"},
                                    "detail": {},
                                },
                            },
                        }
                    },
                },
            },
        },
    }
