"""Redis key names. Every key of a show or deal carries its hash tag so a
Redis Cluster keeps them on one slot and multi-key functions stay legal."""

from __future__ import annotations


class Keys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def show(self, show_id: str, suffix: str) -> str:
        return f"{self.prefix}:{{show:{show_id}}}:{suffix}"

    def deal(self, deal_id: str, suffix: str) -> str:
        return f"{self.prefix}:{{deal:{deal_id}}}:{suffix}"

    def deal_keys(self, deal_id: str) -> list[str]:
        """state, users, holds, holddata, idem: the order the functions expect."""
        return [self.deal(deal_id, s) for s in ("state", "users", "holds", "holddata", "idem")]

    @property
    def live_deals(self) -> str:
        return f"{self.prefix}:deals:live"
