"""Small rules behind the field apps: pairing codes as typed, push endpoints allowed,
push payloads that fit, category names in both languages."""

from __future__ import annotations

import json
import re
from pathlib import Path

from services.notification.push import MAX_PAYLOAD_BYTES, endpoint_allowed, push_payload
from services.volunteer_locator.pairing import ALPHABET, new_code, normalise, pairing_url
from shared.categories import load_category_labels
from shared.webapp import category_names

PUSH_HOSTS = ["fcm.googleapis.com", "*.push.apple.com"]


def test_a_code_is_read_the_same_however_it_is_typed() -> None:
    assert normalise("ab2c-d3ef gh") == "AB2CD3EFGH"


def test_codes_avoid_characters_people_misread() -> None:
    codes = {new_code(8) for _ in range(200)}
    assert all(len(c) == 8 for c in codes)
    assert set("".join(codes)) <= set(ALPHABET)
    assert not set("".join(codes)) & set("01OIL")


def test_the_qr_link_keeps_the_code_out_of_server_logs() -> None:
    assert pairing_url(base="https://apps.example/", code="ABCD2345") == (
        "https://apps.example/responder/#code=ABCD2345"
    )


def test_only_known_push_services_over_https_are_accepted() -> None:
    assert endpoint_allowed(
        "https://fcm.googleapis.com/fcm/send/x", hosts=PUSH_HOSTS, allow_http=False
    )
    assert endpoint_allowed(
        "https://api.push.apple.com/3/device/x", hosts=PUSH_HOSTS, allow_http=False
    )
    assert not endpoint_allowed("http://fcm.googleapis.com/x", hosts=PUSH_HOSTS, allow_http=False)
    assert not endpoint_allowed("https://10.0.0.8/admin", hosts=PUSH_HOSTS, allow_http=False)
    assert not endpoint_allowed(
        "https://fcm.googleapis.com.evil.example/x", hosts=PUSH_HOSTS, allow_http=False
    )
    assert not endpoint_allowed("https://evilpush.apple.com/x", hosts=PUSH_HOSTS, allow_http=False)


def test_a_large_message_is_cut_to_what_wakes_the_phone() -> None:
    message = {"type": "offer", "offer_id": "o-1", "category": "fire", "address": "x" * 5000}
    pushed = push_payload(json.dumps(message))
    assert len(pushed.encode()) <= MAX_PAYLOAD_BYTES
    assert json.loads(pushed)["offer_id"] == "o-1"
    small = json.dumps({"type": "offer", "offer_id": "o-2"})
    assert push_payload(small) == small


def test_every_default_category_has_both_names() -> None:
    labels = load_category_labels()
    named = category_names(list(labels), labels)
    assert all(set(c.names) == {"en", "zh-CN"} for c in named)
    (unnamed,) = category_names(["graffiti"], labels)
    assert unnamed.names == {"en": "graffiti", "zh-CN": "graffiti"}


def test_every_key_the_apps_use_is_in_both_catalogues() -> None:
    web = Path(__file__).resolve().parents[2] / "web"
    catalogues = {
        lang: json.loads((web / "common" / "messages" / f"{lang}.json").read_text())
        for lang in ("en", "zh-CN")
    }
    assert set(catalogues["en"]) == set(catalogues["zh-CN"])
    used: set[str] = set()
    for page in web.glob("*/index.html"):
        used |= set(re.findall(r'data-i18n(?:-[\w-]+)?="([\w.]+)"', page.read_text()))
    for script in web.glob("*/app.js"):
        used |= set(re.findall(r'\bt\("([\w.]+)"', script.read_text()))
        used |= set(re.findall(r'"(responder\.nav\w+)"', script.read_text()))
    assert len(used) > 50
    assert used - set(catalogues["en"]) == set()
