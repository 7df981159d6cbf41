"""The stream relay: Gradio calls (the page's, gradio_client's) outlive the web front that serves them.

HAProxy sends every ``POST /gradio_api/queue/join`` and ``GET /gradio_api/queue/data`` to this host's jobs service,
which passes them to the client's web front through the worker queue, remembering the calls joined (``joins``) and
reading the stream's messages (``calls``, ``messages``). When that web front dies mid-call, the relay has a live one
take each call still in flight over (adopt its job: ``webui.web.studio.adoption``; or join the call again whole) and
goes on reading from there, so the client sees one stream to the end (``relay``; the routes: ``route``).
gradio_client's ``cancel`` passes through it too: a call taken over elsewhere has its job canceled here.
"""

from jobs.relay.relay import StreamRelay
from jobs.relay.route import relay_route

__all__ = ["StreamRelay", "relay_route"]
