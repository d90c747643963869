"""Patrol planning, mission file export/import and flight execution (DroneKit in one adapter)."""

from missions.errors import MissionError

__all__ = ["MissionError"]
