"""Dedupe and delivery-marker keys in Redis expire within hours, as configured."""

from __future__ import annotations

import uuid

from services.notification.settings import NotificationSettings
from shared.redis import RedisDedupeStore, create_redis
from shared.settings import ServiceSettings
from tests.harness import AUTH_SECRET, Infra


async def test_a_handled_event_id_expires_after_the_configured_hours(infra: Infra) -> None:
    settings = ServiceSettings.model_validate({"auth_secret": AUTH_SECRET})
    assert settings.dedupe_ttl_s == 6 * 3600
    redis = create_redis(infra.redis_url)
    try:
        store = RedisDedupeStore(
            redis, namespace=f"ttl-{uuid.uuid4()}", ttl_s=settings.dedupe_ttl_s
        )
        event_id = str(uuid.uuid4())
        await store.mark([event_id])
        assert await store.seen([event_id]) == {event_id}
        [key] = [k async for k in redis.scan_iter(match=f"*:handled:{event_id}")]
        assert 0 < await redis.ttl(key) <= 6 * 3600
    finally:
        await redis.aclose()


def test_the_delivery_marker_lifetime_is_hours_and_configurable() -> None:
    settings = NotificationSettings.model_validate(
        {"auth_secret": AUTH_SECRET, "delivery_marker_ttl_s": 3600}
    )
    assert settings.delivery_marker_ttl_s == 3600
    default = NotificationSettings.model_validate({"auth_secret": AUTH_SECRET})
    assert default.delivery_marker_ttl_s <= 24 * 3600
