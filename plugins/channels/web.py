"""
The ``web`` channel: reports posted straight to Siaga, by a web form (served at
``/channels/<name>/``) or by another system.

``POST /channels/<name>/webhook`` takes JSON ``{"sender", "text", "name"?, "location": {"lat",
"lon"}?, "id"?}`` or the same fields form-encoded (``lat`` and ``lon`` as separate fields) and
answers ``202 {"message_id", "ticket"}`` once the report is stored (an HTML page with the ticket
when a browser posted the form). ``id`` is the sender's own id for the report: posting the same
id again answers the first ticket instead of storing a second report.
"""

from __future__ import annotations

import hmac
import html
import json
import math
from importlib import resources
from urllib.parse import parse_qs

from twisted.internet import defer
from twisted.web.resource import Resource
from zope.interface import implementer

from gateway.errors import MalformedRequest, NotHandled, PermanentDeliveryError, RequestRefused
from gateway.hookspecs import hookimpl
from gateway.interfaces import IChannel
from gateway.message import Location, Message, Parsed
from gateway.options import Option, positive

_JSON = b"application/json"
_FORM = b"application/x-www-form-urlencoded"


@implementer(IChannel)
class WebChannel:
    """Reports over plain HTTP, with an optional bearer token, and a report form for citizens."""

    channel_type = "web"
    sends_acknowledgements = False  # the ticket is in the HTTP answer itself
    can_send = False  # and there is no way back to the citizen after it
    options = (
        Option("token", str, default=None, secret=True,
               doc="If set, posts need 'Authorization: Bearer <token>' (the form then cannot be used)."),
        Option("max_text", int, default=4000, check=positive, doc="Longest report text, in characters."),
        Option("form", bool, default=True, doc="Serve the report form at /channels/<name>/."),
        Option("title", str, default="Laporkan Kejadian", doc="The heading of the form."),
    )

    def __init__(self, name, options, context):
        self.name = name
        self.token = options.get("token")
        self.max_text = options.get("max_text", 4000)
        self.form = options.get("form", True)
        self.title = options.get("title", "Laporkan Kejadian")

    def start(self):
        return None

    def stop(self):
        return None

    def verify(self, request, body):
        if self.token is None:
            return
        scheme, _, given = (request.getHeader("authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            raise RequestRefused("missing or wrong bearer token", code=401)

    def parse(self, request, body):
        content_type = (request.getHeader("content-type") or "").split(";")[0].strip().lower().encode()
        if content_type == _JSON:
            fields = self._json_fields(body)
        elif content_type == _FORM:
            try:
                fields = {k: v[0] for k, v in parse_qs(body.decode("utf-8"), keep_blank_values=True).items()}
            except UnicodeDecodeError as e:
                raise MalformedRequest("the form body is not UTF-8") from e
            if "lat" in fields or "lon" in fields:
                fields["location"] = {"lat": fields.pop("lat", ""), "lon": fields.pop("lon", "")}
        else:
            shown = content_type.decode("latin-1") or "none"
            raise MalformedRequest(
                f"Content-Type must be application/json or application/x-www-form-urlencoded, got {shown}")
        return Parsed(messages=(self._message(fields),))

    @staticmethod
    def _json_fields(body):
        try:
            fields = json.loads(body)
        except ValueError as e:
            raise MalformedRequest(f"body is not valid JSON: {e}") from e
        if not isinstance(fields, dict):
            raise MalformedRequest("body must be a JSON object with 'sender' and 'text'")
        return fields

    def _message(self, fields) -> Message:
        text = fields.get("text")
        if not isinstance(text, str) or not text.strip():
            raise MalformedRequest("'text' is missing or empty")
        if len(text) > self.max_text:
            raise MalformedRequest(f"'text' is longer than {self.max_text} characters")
        sender = fields.get("sender")
        if not isinstance(sender, (str, int)) or not str(sender).strip():
            raise MalformedRequest("'sender' is missing or empty: give a phone number or an e-mail address")
        name = fields.get("name")
        if name is not None and not isinstance(name, str):
            raise MalformedRequest("'name' must be a string")
        external_id = fields.get("id")
        if external_id is not None and not isinstance(external_id, (str, int)):
            raise MalformedRequest("'id' must be a string")
        return Message(
            channel_id=self.name, channel_type=self.channel_type, sender=str(sender).strip(),
            sender_name=(name or "").strip() or None, text=text.strip(),
            external_id=str(external_id) if external_id not in (None, "") else None,
            location=self._location(fields.get("location")),
        )

    @staticmethod
    def _location(value):
        if value in (None, "", {}):
            return None
        if not isinstance(value, dict):
            raise MalformedRequest("'location' must be an object with 'lat' and 'lon'")
        if value.get("lat") in (None, "") and value.get("lon") in (None, ""):
            return None
        try:
            lat, lon = float(value["lat"]), float(value["lon"])
        except (KeyError, TypeError, ValueError) as e:
            raise MalformedRequest("'location' needs numeric 'lat' and 'lon'") from e
        if not (math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180):
            raise MalformedRequest("'location' is outside -90..90 latitude or -180..180 longitude")
        return Location(lat=lat, lon=lon, source="channel")

    def acknowledge(self, request, accepted):
        message = accepted[0].message
        request.setResponseCode(202)
        posted_form = not (request.getHeader("content-type") or "").startswith("application/json")
        if posted_form and "text/html" in (request.getHeader("accept") or ""):
            request.setHeader(b"content-type", b"text/html; charset=utf-8")
            return _thanks_page(self.title, message.ticket).encode("utf-8")
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"message_id": message.id, "ticket": message.ticket}).encode()

    def render_get(self, request):
        raise NotHandled()

    def page(self):
        return _FormPage(self.title) if self.form else None

    def send(self, reply):
        return defer.fail(PermanentDeliveryError("the web channel has no way back to the citizen after its answer"))


def _form_html() -> str:
    return resources.files("plugins.channels").joinpath("web_form.html").read_text(encoding="utf-8")


def _thanks_page(title: str, ticket: str) -> str:
    return (
        '<!doctype html><html lang="id"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title></head><body><main>"
        '<h1>Laporan diterima</h1>'
        f'<p role="status">Terima kasih. Nomor tiket Anda: <strong>{html.escape(ticket)}</strong>.</p>'
        "<p>Jika nyawa terancam, segera telepon <a href=\"tel:112\">112</a>.</p>"
        '<p><a href="./">Kirim laporan lain</a></p></main></body></html>'
    )


class _FormPage(Resource):
    isLeaf = True

    def __init__(self, title):
        super().__init__()
        self.title = title

    def render_GET(self, request):
        if request.postpath not in ([], [b""]):
            request.setResponseCode(404)
            return b"Not found"
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return _form_html().replace("{title}", html.escape(self.title)).encode("utf-8")


@hookimpl
def siaga_register_channels(register):
    register("web", WebChannel)
