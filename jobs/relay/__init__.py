"""The stream relay: API clients' Gradio event streams outlive the web front that serves them.

HAProxy sends an API client's ``GET /gradio_api/queue/data`` (no browser's: a page follows its job itself) to this
host's jobs service, which reads the stream from the client's web front through the worker queue and passes it on.
When that web front dies mid-call, the relay asks a live one to adopt each call still in flight (it follows the
same job: ``webui.web.studio.adoption``) and goes on reading from there, so the client sees one stream to the end.
"""

from jobs.relay.relay import StreamRelay
from jobs.relay.route import relay_route

__all__ = ["StreamRelay", "relay_route"]
