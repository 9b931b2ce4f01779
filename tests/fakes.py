"""Scripted fake LMs for logic tests: no network, no model weights."""

from __future__ import annotations

from collections.abc import Callable

from dspy.lm15 import Message, Response, TextPart
from dspy.lm15 import Usage as LMUsage

from ctxopt.lm import TrackedLM


class ScriptedEngine:
    """A DSPy engine whose reply is ``respond(system, user) -> str``.

    ``requests`` records (system, user) of every call that reached the engine.
    """

    def __init__(self, respond: Callable[[str, str], str]) -> None:
        self.respond = respond
        self.requests: list[tuple[str, str]] = []

    def complete(self, request):
        system = request.system if isinstance(request.system, str) else ""
        user = "\n".join(m.text or "" for m in request.messages)
        self.requests.append((system, user))
        text = self.respond(system, user)
        return Response(id=None, model="scripted", message=Message.assistant([TextPart(text)]),
                        finish_reason="stop",
                        usage=LMUsage(input_tokens=len(user.split()), output_tokens=len(text.split()),
                                      total_tokens=len(user.split()) + len(text.split())))

    def stream(self, request):  # pragma: no cover - not used
        from dspy.lm15 import response_to_events

        return response_to_events(self.complete(request))

    def close(self) -> None:
        pass

    def dump_state(self) -> dict:
        return {"respond": getattr(self.respond, "__qualname__", "respond")}

    @classmethod
    def load_state(cls, state: dict) -> ScriptedEngine:  # pragma: no cover - programs are not reloaded in tests
        raise NotImplementedError("a scripted engine cannot be rebuilt from saved state")


def chat_fields(**fields: str) -> str:
    """Format a reply the way DSPy's ChatAdapter parses it."""
    body = "".join(f"[[ ## {k} ## ]]\n{v}\n\n" for k, v in fields.items())
    return body + "[[ ## completed ## ]]"


def scripted_lm(respond: Callable[[str, str], str], name: str = "scripted/fake", cache: bool = False) -> TrackedLM:
    """A usage-tracked LM driven by ``respond``; uncached by default."""
    return TrackedLM(name, engine=ScriptedEngine(respond), temperature=0.0, max_tokens=256, cache=cache)
