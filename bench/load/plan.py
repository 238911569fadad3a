"""The scenarios: how many rooms of which shape a load step fills.

* ``one_to_one``: inquiries, two participants, both publishing audio and video;
* ``mediation``: four participants, all publishing;
* ``education``: one publisher (the officer) and 30 viewers;
* ``mix``: per ten rooms, six inquiries, three mediations, one education room.
"""

from __future__ import annotations

from dataclasses import dataclass

SCENARIOS = ("one_to_one", "mediation", "education", "mix")
EDUCATION_VIEWERS = 30

# publishers and viewers of each room shape
SHAPES = {"one_to_one": (2, 0), "mediation": (4, 0), "education": (1, EDUCATION_VIEWERS)}

# six inquiries, three mediations and one education room in every ten, interleaved so that small
# steps already mix them
MIX_CYCLE = (
    "one_to_one",
    "mediation",
    "one_to_one",
    "education",
    "one_to_one",
    "mediation",
    "one_to_one",
    "one_to_one",
    "mediation",
    "one_to_one",
)


@dataclass(frozen=True)
class RoomPlan:
    room: str
    shape: str
    publishers: int
    viewers: int

    @property
    def participants(self) -> int:
        return self.publishers + self.viewers

    @property
    def streams(self) -> int:
        """Forwarded media streams: each publisher's audio and video to everyone else."""
        return 2 * self.publishers * (self.participants - 1)


def plan_rooms(scenario: str, rooms: int, prefix: str) -> list[RoomPlan]:
    if scenario == "mix":
        kinds = [MIX_CYCLE[i % len(MIX_CYCLE)] for i in range(rooms)]
    else:
        kinds = [scenario] * rooms
    return [RoomPlan(f"{prefix}-{i}", kind, *SHAPES[kind]) for i, kind in enumerate(kinds)]
