"""Raised hands and the floor of one education session: the rules, with no I/O and no clock.

A viewer raises (or lowers) a hand; officers see the hands in the order they went up. An
officer gives the floor to a viewer (a raised hand or not), at most ``max_holders`` at a time;
it lasts until taken back, the viewer leaves, or ``seconds`` pass (0: no limit). Giving the
floor lowers the hand. Only a holder's audio and video are forwarded to the other participants
(:meth:`mediaserver.participant.SfuParticipant.set_held`, applied by :mod:`.desk`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class FloorRefused(Exception):
    """An officer's request the floor cannot grant: ``code`` names why (catalog
    ``education.<code>``)."""

    def __init__(self, code: str, **params: Any) -> None:
        super().__init__(code)
        self.code = code
        self.params = params


@dataclass(frozen=True)
class Hand:
    participant: str
    name: str
    raised_at: float

    def as_json(self) -> dict[str, Any]:
        return {"participant": self.participant, "name": self.name, "raised_at": self.raised_at}


@dataclass(frozen=True)
class Holder:
    participant: str
    name: str
    since: float
    until: float | None  # None: until taken back
    given_by: str

    def as_json(self) -> dict[str, Any]:
        return {
            "participant": self.participant,
            "name": self.name,
            "since": self.since,
            "until": self.until,
            "given_by": self.given_by,
        }


class Floor:
    def __init__(self, max_holders: int = 1, seconds: float = 0.0) -> None:
        if max_holders < 1:
            raise ValueError("max_holders must be at least 1")
        self.max_holders = max_holders
        self.seconds = seconds
        self._hands: dict[str, Hand] = {}  # in the order they went up
        self._holders: dict[str, Holder] = {}

    @property
    def hands(self) -> list[Hand]:
        return list(self._hands.values())

    @property
    def holders(self) -> dict[str, Holder]:
        return dict(self._holders)

    def holds(self, participant: str) -> bool:
        return participant in self._holders

    def raise_hand(self, participant: str, name: str, now: float) -> bool:
        """True when the queue changed (a hand already up keeps its place; a holder needs none)."""
        if participant in self._hands or participant in self._holders:
            return False
        self._hands[participant] = Hand(participant, name, now)
        return True

    def lower_hand(self, participant: str) -> bool:
        return self._hands.pop(participant, None) is not None

    def give(
        self, participant: str, name: str, now: float, by: str, seconds: float | None = None
    ) -> Holder:
        """The floor to ``participant`` for ``seconds`` (default: the session's limit)."""
        if participant in self._holders:
            raise FloorRefused("floor_held_already")
        if len(self._holders) >= self.max_holders:
            raise FloorRefused("floor_full", max_holders=self.max_holders)
        limit = self.seconds if seconds is None else seconds
        holder = Holder(participant, name, now, now + limit if limit > 0 else None, by)
        self._holders[participant] = holder
        self._hands.pop(participant, None)
        return holder

    def take(self, participant: str) -> Holder | None:
        return self._holders.pop(participant, None)

    def expired(self, now: float) -> list[Holder]:
        """The holders whose time is up, taken off the floor."""
        done = [h for h in self._holders.values() if h.until is not None and h.until <= now]
        for holder in done:
            del self._holders[holder.participant]
        return done

    def left(self, participant: str) -> Holder | None:
        """The participant left the room: its hand goes down and its floor ends."""
        self._hands.pop(participant, None)
        return self._holders.pop(participant, None)

    def restore(self, state: Any, now: float) -> None:
        """The hands and holders of a saved :meth:`as_json` (a server restarted mid-session),
        in their order: a holder whose time is up, one over ``max_holders`` and a malformed
        entry are left out; a holder's hand stays down."""
        if not isinstance(state, dict):
            return
        for item in state.get("holders") or []:
            try:
                holder = Holder(
                    str(item["participant"]),
                    str(item["name"]),
                    float(item["since"]),
                    None if item.get("until") is None else float(item["until"]),
                    str(item["given_by"]),
                )
            except (KeyError, TypeError, ValueError):
                continue
            if holder.until is not None and holder.until <= now:
                continue
            if len(self._holders) < self.max_holders:
                self._holders.setdefault(holder.participant, holder)
        for item in state.get("hands") or []:
            try:
                hand = Hand(str(item["participant"]), str(item["name"]), float(item["raised_at"]))
            except (KeyError, TypeError, ValueError):
                continue
            if hand.participant not in self._holders:
                self._hands.setdefault(hand.participant, hand)

    def as_json(self) -> dict[str, Any]:
        return {
            "holders": [h.as_json() for h in self._holders.values()],
            "hands": [h.as_json() for h in self._hands.values()],
            "max_holders": self.max_holders,
            "seconds": self.seconds,
        }
