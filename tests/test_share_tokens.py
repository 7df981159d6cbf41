"""Share-link tokens and their key file (``jobs.api.share_tokens``, ``jobs.secret_file``), in process."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from jobs.api.share_tokens import ShareSigner, new_key, read_share_key
from jobs.errors import ShareLinkExpired, ShareLinkInvalid
from jobs.webhooks.signing import read_secret

NOW = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)
JOB_ID = "j_AbCdEfGhIjKlMnOpQrSt-_"


def test_a_token_grants_its_result_until_it_expires_and_only_with_its_key() -> None:
    signer = ShareSigner(new_key())
    token = signer.token(JOB_ID, 2, NOW + timedelta(hours=1))
    shared = signer.check(token, now=NOW)
    assert (shared.job_id, shared.index, shared.expires_at) == (JOB_ID, 2, NOW + timedelta(hours=1))
    with pytest.raises(ShareLinkExpired, match="expired at 2026-12-05 09:00:00 UTC"):
        signer.check(token, now=NOW + timedelta(hours=1))
    with pytest.raises(ShareLinkInvalid):
        ShareSigner(new_key()).check(token, now=NOW)
    for altered in (token.replace(".2.", ".3."), token[:-1], token + "A", "", "../jobs"):
        with pytest.raises(ShareLinkInvalid):
            signer.check(altered, now=NOW)


def test_the_key_file_is_generated_once_private_and_never_shown(tmp_path: Path) -> None:
    path = tmp_path / "share-key"
    key = read_share_key(path, create=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and read_share_key(path, create=True) == key
    assert key not in repr(ShareSigner(key))
    path.write_text("not a key\n")
    with pytest.raises(ValueError, match="the share-link key file .* does not hold a secret: a share key starts"):
        read_share_key(path)
    with pytest.raises(ValueError, match="the webhook signing secret file .* cannot be read"):
        read_secret(tmp_path / "missing")
