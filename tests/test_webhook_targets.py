"""A webhook is never a way into the operator's network (jobs/webhooks/targets.py, addresses.py).

Every spelling of loopback and metadata is refused by default; when the operator allows 127.0.0.1/32 (or ::1/128)
the same spellings deliver to a real receiver on loopback, so the refusals are about the address, not the text.
"""

from __future__ import annotations

import anyio
import pytest

from jobs.webhooks.delivery import WebhookSender
from jobs.webhooks.signing import WebhookSigner, new_secret
from jobs.webhooks.targets import TargetGuard, TargetRefused, WebhookTargetPolicy
from tests.webhook_receiver import Receiver

LOOPBACK_SPELLINGS = ["http://localhost:{port}/hook", "http://localhost.:{port}/hook", "http://LocalHost:{port}/",
                      "http://2130706433:{port}/", "http://0x7f.1:{port}/", "http://017700000001:{port}/",
                      "http://127.1:{port}/", "http://[::ffff:127.0.0.1]:{port}/", "http://[::ffff:7f00:1]:{port}/"]
"""Names and numbers that reach 127.0.0.1: a name through the system resolver, the rest parsed as numbers."""

REFUSED_LITERALS = {
    "http://[::1]/": "loopback", "http://0.0.0.0/": "unspecified", "http://[::]/": "unspecified",
    "http://169.254.169.254/latest/meta-data": "metadata", "http://[fd00:ec2::254]/": "metadata",
    "http://[::ffff:169.254.169.254]/": "metadata", "http://0xa9fea9fe/": "metadata",
    "http://168.63.129.16/": "metadata", "http://169.254.1.1/": "link-local", "http://[fe80::1]/": "link-local",
    "http://10.1.2.3/": "private", "http://172.16.0.1/": "private", "http://192.168.1.1/": "private",
    "http://[fc00::1]/": "private", "http://[fd12:3456::1]/": "private", "http://[::ffff:10.0.0.1]/": "private",
    "http://100.64.0.1/": "carrier-grade NAT", "http://224.0.0.1/": "multicast", "http://[ff02::1]/": "multicast",
    "http://240.0.0.1/": "reserved", "http://[fec0::1]/": "site-local", "http://[2002:a00:1::]/": "carries 10.0.0.1",
    "http://[64:ff9b::a9fe:a9fe]/": "metadata",
}

HTTP = WebhookTargetPolicy(allow_http=True)
LOOPBACK_ALLOWED = WebhookTargetPolicy(allow_http=True, allow=("127.0.0.1/32", "::1/128"))


def refusal(guard: TargetGuard, url: str) -> str:
    """The words ``guard`` refuses ``url`` with (resolving it as a delivery would)."""
    with pytest.raises(TargetRefused) as refused:
        anyio.run(guard.resolve, url)
    return str(refused.value)


@pytest.mark.parametrize("spelling", [*LOOPBACK_SPELLINGS, "http://[::1]:{port}/"])
def test_loopback_in_any_spelling_is_refused_by_default_and_delivered_when_the_operator_allows_it(
        spelling: str) -> None:
    host = "::1" if "[::1]" in spelling else "127.0.0.1"
    with Receiver(host=host) as receiver:
        url = spelling.format(port=receiver.port)
        assert "loopback" in refusal(TargetGuard(HTTP), url)

        async def deliver() -> str:
            async with WebhookSender(TargetGuard(LOOPBACK_ALLOWED), WebhookSigner(new_secret())) as sender:
                return (await sender.deliver(url, "msg_1", b"{}")).outcome

        assert anyio.run(deliver) == "delivered"
        assert len(receiver.received) == 1


@pytest.mark.parametrize("url,reason", sorted(REFUSED_LITERALS.items()))
def test_special_purpose_addresses_are_refused_at_submission(url: str, reason: str) -> None:
    with pytest.raises(TargetRefused, match=reason):
        TargetGuard(HTTP).check_url(url)


def test_metadata_stays_refused_even_when_an_allow_entry_covers_it() -> None:
    guard = TargetGuard(WebhookTargetPolicy(allow_http=True, allow=("169.254.0.0/16", "0.0.0.0/0", "metadata")))
    assert guard.check_url("http://169.254.1.1/")
    for url in ("http://169.254.169.254/", "http://[::ffff:a9fe:a9fe]/", "http://metadata.google.internal./",
                "http://metadata/"):
        with pytest.raises(TargetRefused, match="metadata"):
            guard.check_url(url)


def test_a_name_is_refused_if_any_of_its_addresses_is() -> None:
    def answers(host: str, port: int) -> list[str]:
        return {"mixed.example": ["93.184.215.14", "10.0.0.7"], "public.example": ["93.184.215.14"],
                "hooks.lan": ["10.0.0.7"]}[host]

    guard = TargetGuard(WebhookTargetPolicy(), resolver=answers)
    assert "resolves to 10.0.0.7" in refusal(guard, "https://mixed.example/hook")
    assert [str(a) for a in anyio.run(guard.resolve, "https://public.example/hook").addresses] == ["93.184.215.14"]
    assert "private network" in refusal(guard, "https://hooks.lan/hook")
    by_name = TargetGuard(WebhookTargetPolicy(allow=("*.lan",), deny=("93.184.215.0/24",)), resolver=answers)
    assert [str(a) for a in anyio.run(by_name.resolve, "https://hooks.lan/hook").addresses] == ["10.0.0.7"]
    assert "deny list" in refusal(by_name, "https://public.example/hook")


def test_the_deny_list_wins_over_the_allow_list() -> None:
    guard = TargetGuard(WebhookTargetPolicy(allow=("10.0.0.0/8", "*.corp"), deny=("10.9.0.0/16", "vault.corp")))
    assert guard.check_url("https://10.1.0.1/")
    for url in ("https://10.9.0.1/", "https://[::ffff:10.9.0.1]/", "https://vault.corp/"):
        with pytest.raises(TargetRefused, match="deny list"):
            guard.check_url(url)


@pytest.mark.parametrize("url,words", [
    ("http://hooks.example/", "must start with https://"),
    ("ftp://hooks.example/", "must start with https://"),
    ("https://user:secret@hooks.example/", "user name or password"),
    ("https://hooks.example:0/", "port"),
    ("https://hooks.example/" + "a" * 2048, "longer than 2048"),
    ("https://" + "a" * 60 + ("." + "a" * 60) * 4 + "/", "not a valid host name"),
    ("https://1.2.3.4.5/", "not a valid host name"),
    ("https://99999999999/", "not a valid host name"),
    ("https://bad_-.example-/", "not a valid host name"),
    ("hooks.example/path", "must start with https://"),
])
def test_the_url_shape_is_checked_at_submission(url: str, words: str) -> None:
    with pytest.raises(TargetRefused, match=words):
        TargetGuard().check_url(url)


def test_a_public_url_passes_and_http_only_when_the_operator_allows_it() -> None:
    assert TargetGuard().check_url("https://hooks.example.com:8443/portrait?x=1").host == "hooks.example.com"
    assert TargetGuard().check_url("https://93.184.215.14/hook").host == "93.184.215.14"
    assert TargetGuard(HTTP).check_url("http://hooks.example.com/").scheme == "http"


def test_the_policy_rejects_entries_that_are_neither_networks_nor_names() -> None:
    with pytest.raises(ValueError, match="neither a network"):
        WebhookTargetPolicy(allow=("10.0.0.0/33",))
    with pytest.raises(ValueError, match="neither a network"):
        WebhookTargetPolicy(deny=("http://x/",))
    assert WebhookTargetPolicy(allow=("Hooks.LAN.",)).allow == ("hooks.lan",)
