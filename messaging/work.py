"""What a delivery task works through besides the urgent work every task serves (see messaging.delivery)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from django.core.cache import cache
from django.db.models import QuerySet

from messaging import dispatch
from messaging.models import Message


class Work(Protocol):
    def candidates(self) -> QuerySet[Message]: ...

    def keep_alive(self) -> None: ...

    def hand_over(self, trace_id: str) -> None: ...

    def claimed(self, messages: Sequence[Message], trace_id: str) -> None: ...


class CampaignWork:
    """A campaign's queued messages, in id order."""

    def __init__(self, campaign_id: int) -> None:
        self.campaign_id = campaign_id
        # Where a paused expansion of the campaign wants to be restarted (read with the keep-alive refresh).
        self.resume_at: int | None = None

    def candidates(self) -> QuerySet[Message]:
        return Message.objects.filter(campaign_id=self.campaign_id)

    def keep_alive(self) -> None:
        cache.set(dispatch.campaign_engine_key(self.campaign_id), 1, timeout=dispatch.CAMPAIGN_ENGINE_KEY_SECONDS)
        self.resume_at = cache.get(dispatch.campaign_expansion_resume_key(self.campaign_id))

    def claimed(self, messages: Sequence[Message], trace_id: str) -> None:
        """Claims go in id order: one that reaches the resume point restarts the paused expansion, so the campaign's
        next rows are written while the messages already queued are sent (messaging.services.expansion)."""
        if self.resume_at is not None and messages and max(m.pk for m in messages) >= self.resume_at:
            self.resume_at = None
            dispatch.resume_expansion(self.campaign_id, trace_id)

    def hand_over(self, trace_id: str) -> None:
        dispatch.enqueue_campaign_delivery(self.campaign_id, trace_id)


class ListedWork:
    """Messages given by id (the task path of earlier releases, and tests)."""

    def __init__(self, message_ids: Sequence[int]) -> None:
        self.message_ids = list(message_ids)

    def candidates(self) -> QuerySet[Message]:
        return Message.objects.filter(pk__in=self.message_ids)

    def keep_alive(self) -> None:
        return None

    def hand_over(self, trace_id: str) -> None:
        dispatch.enqueue_delivery(self.message_ids, trace_id)

    def claimed(self, messages: Sequence[Message], trace_id: str) -> None:
        return None
