"""The ``/v2/`` API: every route of the distribution spec, assembled in matching order.

Repository names span several path segments (``/v2/team/app/api/manifests/1.0``), so routes
use the ``path`` convertor for ``name`` and validate it in a dependency; the more specific
routes (uploads before blobs, tags list and referrers before manifests) come first.
"""

from starlette.routing import BaseRoute

from registry.api.v2 import blobs, manifests, referrers, tags, uploads

# Routes are added to the app as they are rather than through ``include_router``: FastAPI's
# lazily included routers are invisible to prometheus-fastapi-instrumentator's route lookup.
routes: list[BaseRoute] = [
    route
    for module in (tags, referrers, uploads, blobs, manifests)
    for route in module.router.routes
]

__all__ = ["routes"]
