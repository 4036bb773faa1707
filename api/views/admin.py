"""Managing the care circle through the API: assembles the administration routes under /api/v1,
one module per resource (api/views/admin_*.py; their models: api/schemas/).

System admins manage everything; an institution admin manages its own institution's doctors, their
contracts and its residents; seeing a resident is not owning it (api/views/guards.py: ownership).
Contracted doctors set their residents' thresholds and SpO2 scale. Domain rules live in care/ and
devices/; the route modules check who may ask, turn refusals into 4xx answers and audit every
change (and every read of resident data).
"""

from __future__ import annotations

from fastapi import APIRouter

from api.views import (
    admin_contracts,
    admin_devices,
    admin_doctors,
    admin_institutions,
    admin_platforms,
    admin_policies,
    admin_residents,
    admin_thresholds,
)

router = APIRouter(prefix="/api/v1", tags=["administration"])
# In this order, as before the split: the OpenAPI schema lists the paths as they are included.
for resource in (
    admin_institutions,
    admin_doctors,
    admin_contracts,
    admin_residents,
    admin_thresholds,
    admin_policies,
    admin_devices,
    admin_platforms,
):
    router.include_router(resource.router)
