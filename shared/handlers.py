"""One way to route events: a ``HANDLERS`` table of plain functions taking the service's
context, bound to that context once in ``create_app`` for the consume loop."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from shared.events import Envelope, Event
from shared.kafka import BatchHandler, Handler

C = TypeVar("C")

# The event is typed ``Any`` here so each handler can name its own event class; the table
# maps that class to the handler, and the consume loop only calls it with that class.
ContextHandler = Callable[[Any, Envelope, C], Awaitable[None]]
# A run of consecutive events handled at once (pings, for example, or a partition's run
# of incident events written in one transaction).
ContextBatchHandler = Callable[[Sequence[tuple[Any, Envelope]], C], Awaitable[None]]


def bind_handlers(
    table: Mapping[type[Event], ContextHandler[C]], ctx: C
) -> dict[type[Event], Handler]:
    """The table's handlers with ``ctx`` bound, as the consume loop calls them."""

    def bind(handler: ContextHandler[C]) -> Handler:
        async def handle(event: Event, envelope: Envelope) -> None:
            await handler(event, envelope, ctx)

        return handle

    return {event_type: bind(handler) for event_type, handler in table.items()}


def bind_batch_handlers(
    table: Mapping[type[Event], ContextBatchHandler[C]], ctx: C
) -> dict[type[Event], BatchHandler]:
    """The table's batch handlers with ``ctx`` bound, as the consume loop calls them.

    Event types that share a handler share its bound function too, so the consume loop
    hands their consecutive events to it as one run."""

    def bind(handler: ContextBatchHandler[C]) -> BatchHandler:
        async def handle(batch: Sequence[tuple[Event, Envelope]]) -> None:
            await handler(batch, ctx)

        return handle

    bound = {id(handler): bind(handler) for handler in table.values()}
    return {event_type: bound[id(handler)] for event_type, handler in table.items()}
