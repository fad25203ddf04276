"""
The admin API, behind ``admin.token`` (absent when no token is configured):

- ``GET /admin/dead-letters[?destination=D&limit=N]``: dead letters, newest first.
- ``GET /admin/dead-letters/<delivery-id>``: one, with its message.
- ``POST /admin/replay`` with ``{"ids": [...]}`` or ``{"all": true, "destination": D?}``:
  makes them pending again; answers ``{"replayed": N}``.
"""

from __future__ import annotations

import json

from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from gateway.message import PRIORITIES
from gateway.web.common import error_body, write_json


def dead_letter_json(dead, full=False) -> dict:
    """A dead letter as JSON; ``full`` adds the message and triage."""
    delivery = dead.delivery
    value = {
        "delivery_id": delivery.id,
        "destination": delivery.destination_id,
        "message_id": delivery.message.id,
        "ticket": delivery.message.ticket,
        "priority": delivery.priority,
        "attempts": dead.attempts,
        "error": dead.error,
        "failed_at": dead.failed_at,
    }
    if full:
        value["message"] = delivery.message.to_json()
        value["triage"] = delivery.triage.to_json()
    return value


class Admin(Resource):
    """``/admin/``."""

    def __init__(self, store, dispatcher, clock):
        super().__init__()
        self.putChild(b"dead-letters", DeadLetters(store))
        self.putChild(b"replay", Replay(store, dispatcher, clock))


class DeadLetters(Resource):
    isLeaf = True

    def __init__(self, store):
        super().__init__()
        self.store = store

    def render_GET(self, request):
        wanted = request.postpath[0].decode() if request.postpath and request.postpath[0] else None
        destination = request.args.get(b"destination", [b""])[0].decode() or None
        try:
            limit = int(request.args.get(b"limit", [b"100"])[0])
        except ValueError:
            return error_body(request, 400, "limit must be an integer")
        d = self.store.dead_letters(destination_id=destination, limit=limit if wanted is None else 100000)

        def answer(dead):
            if wanted is None:
                write_json(request, 200, {"dead_letters": [dead_letter_json(x) for x in dead]})
                return
            for x in dead:
                if x.delivery.id == wanted:
                    write_json(request, 200, dead_letter_json(x, full=True))
                    return
            write_json(request, 404, {"error": f"no dead letter {wanted}"})
        d.addCallback(answer)
        d.addErrback(lambda f: write_json(request, 503, {"error": f.getErrorMessage()}))
        return NOT_DONE_YET


class Replay(Resource):
    isLeaf = True

    def __init__(self, store, dispatcher, clock):
        super().__init__()
        self.store = store
        self.dispatcher = dispatcher
        self.clock = clock

    def render_POST(self, request):
        try:
            body = json.loads(request.content.read() or b"{}")
        except ValueError as e:
            return error_body(request, 400, f"body is not JSON: {e}")
        if not isinstance(body, dict) or not (isinstance(body.get("ids"), list) or body.get("all") is True):
            return error_body(request, 400, 'expected {"ids": [delivery ids]} or {"all": true, "destination": name?}')
        ids = None if body.get("all") is True else [str(i) for i in body["ids"]]
        d = self.store.replay(delivery_ids=ids, destination_id=body.get("destination"), now=self.clock.seconds())

        def answer(count):
            if self.dispatcher is not None:
                for lane in PRIORITIES:
                    self.dispatcher.wake(lane)
            write_json(request, 200, {"replayed": count})
        d.addCallback(answer)
        d.addErrback(lambda f: write_json(request, 503, {"error": f.getErrorMessage()}))
        return NOT_DONE_YET
