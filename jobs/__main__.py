"""``python -m jobs``: the jobs service (``jobs.service``) under uvicorn; ``--help`` lists the settings.
``python -m jobs accounts ...``: accounts, members and API keys (``jobs.accounts_cli``)."""

from __future__ import annotations

import logging
import sys

from jobs import accounts_cli
from jobs.listeners import serve
from jobs.service import build_app
from jobs.settings import JobsSettings
from webui.log_setup import configure_logging
from webui.settings_common import settings_from_cli

logger = logging.getLogger("jobs")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["accounts"]:
        return accounts_cli.main(argv[1:])
    settings = settings_from_cli(JobsSettings, argv, "python -m jobs")
    if settings is None:
        return 2
    configure_logging()  # text or JSON lines (PORTRAIT_LOG_FORMAT), each with its request's ids
    try:
        app = build_app(settings)
    except ValueError as error:  # a setting that only fails on use: the webhook secret file, the store URL
        print(f"python -m jobs: {error}", file=sys.stderr)
        return 2
    logger.info("jobs service on http://%s:%d (workers: %s)", settings.host, settings.port, settings.worker_queue_url)
    serve(app, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
