"""The fleet: awgd's figures from many servers in one central PostgreSQL (docs/FLEET.md).

A product beside the daemon and the client library, with its own needs (SQLAlchemy and a
PostgreSQL driver): `awgd-mirror` copies one node's figures there (awgd_fleet.mirror), the
database's schema, migrations and roles are awgd_fleet.schema, and a bot reads the fleet with
`FleetClient` (awgd_fleet.reader). A bot that talks to one server needs none of it.
"""

from awgd_fleet.reader import (
    BadFleetPlan,
    FleetClient,
    FleetEvent,
    FleetNode,
    FleetTraffic,
    FleetUserUsage,
    NodeTraffic,
    fleet_plan,
)

__all__ = [
    "BadFleetPlan",
    "FleetClient",
    "FleetEvent",
    "FleetNode",
    "FleetTraffic",
    "FleetUserUsage",
    "NodeTraffic",
    "fleet_plan",
]
