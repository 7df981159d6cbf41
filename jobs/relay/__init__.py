"""The stream relay: API clients' Gradio calls outlive the web front that serves them.

HAProxy sends an API client's ``POST /gradio_api/queue/join`` and ``GET /gradio_api/queue/data`` (no browser's: a
page follows its job itself) to this host's jobs service, which passes them to the client's web front through the
worker queue, remembering the calls joined (``joins``) and reading the stream's messages (``calls``, ``messages``).
When that web front dies mid-call, the relay asks a live one to adopt each call still in flight (it follows the
same job: ``webui.web.studio.adoption``) and goes on reading from there, so the client sees one stream to the end
(``relay``; the routes: ``route``).
"""

from jobs.relay.relay import StreamRelay
from jobs.relay.route import relay_route

__all__ = ["StreamRelay", "relay_route"]
