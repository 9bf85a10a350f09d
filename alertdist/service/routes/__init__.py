"""The service's routes, one module per kind of thing served: operations and nights, alerts, objects, files.

Each route finds the archive (`ArchiveStore`) and the service's settings on ``request.app.state`` and asks
`visible` which programmes the caller may read."""

from alertdist.service.routes.alerts import router as alerts
from alertdist.service.routes.files import router as files
from alertdist.service.routes.nights import router as nights
from alertdist.service.routes.objects import router as objects

ROUTERS = (nights, alerts, objects, files)

__all__ = ["ROUTERS"]
