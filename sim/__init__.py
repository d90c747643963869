"""The simulated district: seeded world, camera renderer and MAVLink vehicle.

Used by the demo, tests, training-data generation and benchmarks; production code never
imports it.
"""

from sim.errors import SimError

__all__ = ["SimError"]
