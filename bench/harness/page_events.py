"""The studio page's events as its app ``/config`` describes them, and the queue stream's messages of one event."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from bench.harness.generation import CallFailed


@dataclass(frozen=True)
class PageEvent:
    """One event of the page (e.g. the Generate button's click), as the app's ``/config`` describes it, and the
    events the page runs after it (``.then``: with jobs, Generate records the job and a second event follows it)."""

    fn_index: int
    trigger_id: int | None
    inputs: list[tuple[str | None, Any]]
    """(elem_id, the value the page starts with) of each input component, in order (label for an API event)."""
    outputs: list[str | None]
    """elem_id of each output component, in order."""
    input_ids: tuple[int, ...] = ()
    output_ids: tuple[int, ...] = ()
    then: PageEvent | None = None
    """The event the page runs once this one completed (its inputs read the values this one's outputs set)."""

    @classmethod
    def api(cls, config: dict[str, Any], api_name: str) -> PageEvent:
        """The client API's ``api_name`` event; its inputs are keyed by their labels (the API's argument names)."""
        components = {c["id"]: c.get("props", {}) for c in config["components"]}
        for index, dependency in enumerate(config["dependencies"]):
            if dependency.get("api_name") == api_name:
                return cls(
                    fn_index=dependency.get("id", index),
                    trigger_id=None,
                    inputs=[(components[i].get("label"), components[i].get("value")) for i in dependency["inputs"]],
                    outputs=[components[o].get("elem_id") for o in dependency["outputs"]],
                )
        raise CallFailed(f"the app has no API endpoint /{api_name}")

    @classmethod
    def find(cls, config: dict[str, Any], elem_id: str, trigger: str = "click") -> PageEvent:
        """The ``trigger`` event of the component with ``elem_id`` (and those chained after it); ``CallFailed`` if
        the page has none."""
        components = {c["id"]: c for c in config["components"]}
        target = next((c for c in components.values() if c.get("props", {}).get("elem_id") == elem_id), None)
        if target is None:
            raise CallFailed(f"the page has no component #{elem_id}")
        dependencies = config["dependencies"]

        def describe(component_id: int) -> tuple[str | None, Any]:
            props = components[component_id].get("props", {})
            return props.get("elem_id"), props.get("value")

        def event(index: int, seen: frozenset[int] = frozenset()) -> PageEvent:
            dependency = dependencies[index]
            fn = dependency.get("id", index)
            chained = next((i for i, d in enumerate(dependencies)
                            if d.get("trigger_after") == fn and d.get("id", i) not in seen), None)
            return cls(fn_index=fn, trigger_id=target["id"], inputs=[describe(i) for i in dependency["inputs"]],
                       outputs=[describe(o)[0] for o in dependency["outputs"]],
                       input_ids=tuple(dependency["inputs"]), output_ids=tuple(dependency["outputs"]),
                       then=None if chained is None else event(chained, seen | {fn}))

        for index, dependency in enumerate(dependencies):
            if [target["id"], trigger] in [list(t) for t in dependency.get("targets", [])]:
                return event(index)
        raise CallFailed(f"#{elem_id} has no {trigger} event")

    def payload(self, values: dict[str, Any]) -> list[Any]:
        """The event's input data: ``values`` by elem_id, the page's own value for the others."""
        return [values.get(elem_id, default) if elem_id else default for elem_id, default in self.inputs]

    def chained_payload(self, shown: dict[int, Any]) -> list[Any]:
        """A chained event's input data: what earlier events set (``shown``, by component id), else the page's."""
        return [shown.get(component, default) for component, (_, default) in zip(self.input_ids, self.inputs,
                                                                                 strict=True)]

    def named_outputs(self, data: list[Any]) -> dict[str, Any]:
        """The event's output data by elem_id."""
        return {elem_id: value for elem_id, value in zip(self.outputs, data, strict=False) if elem_id}

    def component_values(self, data: list[Any]) -> dict[int, Any]:
        """The values the event's output data sets, by component id (Gradio's updates, such as ``gr.skip()``, set
        none: they are not values)."""
        return {component: value for component, value in zip(self.output_ids, data, strict=False)
                if not (isinstance(value, dict) and value.get("__type__") == "update")}


def stream_messages(stream: httpx.Response, event_id: str) -> Iterator[dict[str, Any]]:
    """The SSE messages of a session's queue stream that concern event ``event_id``: those tagged with its id and
    the untagged, session-wide ones (heartbeats, ``close_stream``, ``unexpected_error``), as Gradio's page routes
    them. Another event's messages (a call that failed earlier may still complete) are skipped."""
    for line in stream.iter_lines():
        if not line.startswith("data:"):
            continue
        message = json.loads(line[5:])
        if message.get("event_id") in (None, event_id):
            yield message
