"""
The contracts between Siaga's core and its parts. Plugin authors implement :class:`IChannel`,
:class:`IDestination` or :class:`IClassifier`; the core implements :class:`IStore` once per
database. A destination may also provide :class:`IBatchDestination` (several deliveries in one
request) or :class:`IStatusSource` (the status of the cases it took). The docstrings are the
contract: what each Deferred fires with and which errors mean what. ``gateway.testing`` has
contract-test mixins that check an implementation against them.

A channel or destination class is constructed by the core as ``cls(name, options, context)``:
``name`` is its id in the configuration, ``options`` the validated, secret-resolved mapping of its
configuration keys (declared in the class attribute ``options``, a tuple of
:class:`gateway.options.Option`), and ``context`` a :class:`gateway.context.PluginContext`
holding the reactor, the HTTP client and the ways back into the core.
"""

from zope.interface import Attribute, Interface


class IChannel(Interface):
    """
    One configured inbound account on one platform: a WhatsApp number, a Facebook Page, a
    Telegram bot. The core mounts it at ``/channels/<name>/``: ``POST .../webhook`` runs
    verify -> parse -> store -> acknowledge; ``GET .../webhook`` goes to ``render_get``; anything
    else under ``/channels/<name>/`` goes to ``page``.
    """

    name = Attribute("The channel's id in the configuration; also its URL segment.")
    channel_type = Attribute("The registered type name, e.g. 'whatsapp'.")

    def start():
        """
        Begin any background work (a polling loop, an SMTP listener, warming connections).
        Return ``None`` or a Deferred that fires when the channel is ready; ``/health/ready``
        stays 503 until then. Messages found outside a webhook go in through
        ``context.ingest``.
        """

    def stop():
        """Stop background work. Return ``None`` or a Deferred that fires when stopped."""

    def verify(request, body):
        """
        Check that the webhook ``request`` (a ``twisted.web`` request) with raw ``body`` bytes
        really comes from the platform: signature over the raw bytes, compared with
        ``hmac.compare_digest``, or a token. Return ``None`` if it does; raise
        :class:`gateway.errors.RequestRefused` if not.
        """

    def parse(request, body):
        """
        Turn a verified webhook body into a :class:`gateway.message.Parsed`. Pure: no I/O.
        Raise :class:`gateway.errors.MalformedRequest` with a reason a person can act on when
        the body is not what the platform sends. Events the channel skips on purpose are named
        in ``Parsed.ignored``; they are never an error.
        """

    def acknowledge(request, accepted):
        """
        Answer the platform once every message of the request is stored. ``accepted`` is a list
        of :class:`gateway.message.Accepted`, one per parsed message, in order (duplicates
        included, with the first-stored message and ticket). Set the response code and headers
        on ``request`` and return the body bytes. Must be 2xx: the core only calls it after a
        durable write.
        """

    def render_get(request):
        """
        Answer ``GET /channels/<name>/webhook`` (a subscription handshake or a CRC check):
        return the body bytes, having set the code and headers; raise
        :class:`gateway.errors.RequestRefused` on a wrong token, or
        :class:`gateway.errors.NotHandled` when the platform has no such handshake.
        """

    def page():
        """
        Return a ``twisted.web`` resource for everything else under ``/channels/<name>/`` (a
        web form, say), or ``None`` for a 404.
        """

    def send(reply):
        """
        Send a :class:`gateway.message.Reply` to the citizen. Return a Deferred firing with a
        :class:`gateway.message.Receipt` whose ``reference`` is the platform's id of the sent
        message (so status updates can find it). Fail with
        :class:`gateway.errors.TemporaryDeliveryError` or
        :class:`gateway.errors.PermanentDeliveryError` as for a destination.
        """


class IDestination(Interface):
    """
    One configured outbound target: a LAPOR! account, a 112 command centre, a webhook.
    """

    name = Attribute("The destination's id in the configuration, used in routes.")
    destination_type = Attribute("The registered type name, e.g. 'webhook'.")

    def start():
        """
        Prepare to deliver (open and warm connections). Return ``None`` or a Deferred that
        fires when ready; ``/health/ready`` stays 503 until then.
        """

    def stop():
        """Release connections. Return ``None`` or a Deferred."""

    def deliver(delivery):
        """
        Hand a :class:`gateway.message.Delivery` over. Every request carries ``delivery.id``
        as its idempotency key: the same delivery may be attempted more than once.

        Return a Deferred firing with a :class:`gateway.message.Receipt` once the target has
        taken it. Fail with :class:`gateway.errors.PermanentDeliveryError` when retrying can
        never help (it goes to dead letters at once) and with
        :class:`gateway.errors.TemporaryDeliveryError` (optionally with ``retry_after``)
        otherwise; any other failure counts as temporary.
        """


class IBatchDestination(IDestination):
    """
    A destination that can also take several deliveries in one request. Optional: a destination
    that does not provide it, or whose ``batch_size`` is 1, gets one ``deliver`` call per
    delivery, as always.

    With ``batch_size`` above 1, the dispatcher's high, normal and low lanes call
    ``deliver_batch`` with what is waiting for the destination, up to ``batch_size`` deliveries
    (it never waits on a timer to fill a batch, so a batch may hold a single delivery, and
    deliveries of different lanes may share one; at most one partial batch per destination is in
    flight at a time). The destination's ``concurrency`` then counts batches in
    flight and its ``rate_limit`` batches per second. Emergencies still go one at a time through
    ``deliver``, for the lowest latency.
    """

    batch_size = Attribute("The most deliveries one deliver_batch call takes: an int, 1 or more.")

    def deliver_batch(deliveries):
        """
        Hand a list of :class:`gateway.message.Delivery` over, in one request where the target
        allows. As for ``deliver``, every delivery may be attempted more than once: send each
        ``delivery.id`` so the target can drop repeats (a batch may be formed differently on the
        next attempt).

        Return a Deferred that either

        - fires with a list of the same length, in the same order, holding for each delivery a
          :class:`gateway.message.Receipt` (taken) or a
          :class:`gateway.errors.DeliveryError` *instance* (that delivery failed; temporary or
          permanent as for ``deliver``; any other exception instance counts as temporary); or
        - fails as a whole (a ``DeliveryError`` or any other exception), which counts as that
          failure for every delivery of the batch.

        The circuit breaker counts one outcome per call: a success when at least one delivery
        was taken, a failure otherwise. A list of the wrong length fails the whole batch
        (temporary).
        """


class IStatusSource(Interface):
    """
    A destination that can also say how the cases it took are getting on (LAPOR!'s status of a
    report). Optional: a destination providing it is polled every ``status_interval`` seconds
    for each delivery it took with a receipt reference, until the status is one of
    ``final_statuses``. A change is recorded, announced through the ``siaga_status_changed``
    hook and, with ``citizen_status_update`` configured, told to the citizen.
    """

    status_interval = Attribute("Seconds between polls; 0 or None turns polling off.")
    final_statuses = Attribute("Statuses (compared case-insensitively) after which polling stops.")

    def poll_status(reference):
        """
        Fire with the current status text of the case the destination knows as ``reference``
        (a receipt's reference), or None when it has none yet. Fail on a transport or protocol
        error: the poller logs it and asks again next time.
        """


class IClassifier(Interface):
    """
    Decides how urgent a message is. The rule engine is the default; an integrator can add one
    for a local language or a model and select it with ``triage: {classifier: NAME}``.
    """

    def classify(message):
        """
        Return a :class:`gateway.message.Triage` for a :class:`gateway.message.Message`.
        Synchronous and fast: it runs on the ingest path of every message. Never raises for
        any text.
        """


class IStore(Interface):
    """
    Where accepted messages, their deliveries, dead letters, replies and quarantined bodies
    live. Every method returns a Deferred; a write that cannot be made fails it with
    :class:`gateway.errors.StoreUnavailable`.

    Delivery states: ``pending`` (due at ``next_attempt_at``), ``in_flight`` (claimed by a
    dispatcher), ``delivered``, ``dead``.
    """

    def start():
        """Open the database and bring its schema up to date. Fires when writable."""

    def stop():
        """Finish pending writes and close. Fires when closed."""

    def accept(intakes):
        """
        Durably store a list of :class:`gateway.message.Intake` in one transaction, each message
        with its triage and one delivery per destination. Fires, only after the commit, with one
        :class:`gateway.message.Accepted` per intake, in order. A message whose
        (channel_id, external_id) is already stored is not stored again: its Accepted has
        ``duplicate=True``, the first message, and no deliveries.

        Each new message joins a case: the open case of the same channel, sender and triage
        category whose last message is at most ``case_window`` seconds older (a store setting),
        or a new case whose id is the message's id. The Accepted message carries its ``case_id``
        (so its ``ticket`` is the case's).

        Emergency deliveries come back already claimed (``in_flight``) so the dispatcher starts
        them at once without a read; all others are ``pending`` and due now.
        """

    def quarantine(channel_id, reason, body, headers):
        """Keep a body that could not be parsed (bytes) with its reason and headers (dict)."""

    def claim(priority, limit, now, destination_id=None):
        """
        Mark up to ``limit`` pending deliveries of ``priority`` whose ``next_attempt_at <= now``
        (only those to ``destination_id`` when given) as ``in_flight`` and fire with them
        (oldest first), as :class:`gateway.message.Delivery` with ``attempt`` set to this
        attempt's number. A delivery is claimed by one caller only, even across gateway nodes.
        """

    def next_due(priority, destination_id=None):
        """
        Fire with the earliest ``next_attempt_at`` of pending deliveries of ``priority`` (only
        those to ``destination_id`` when given), or None.
        """

    def delivered(delivery_id, receipt, now):
        """Mark a delivery delivered with its :class:`gateway.message.Receipt`."""

    def delivered_many(outcomes, now):
        """
        Mark several deliveries delivered in one operation: ``outcomes`` is a list of
        ``(delivery_id, receipt)``. Fires with the ids that were not found (normally none);
        the others are recorded all the same.
        """

    def retry_later(delivery_id, error, at):
        """Make an in-flight delivery pending again, due at ``at``, remembering ``error``."""

    def release(delivery_id, at):
        """
        Make a claimed delivery pending again, due at ``at``, without counting the claim as an
        attempt: it was never tried (its destination's circuit breaker was open).
        """

    def dead_letter(delivery_id, error, now):
        """Move a delivery to dead letters with its last ``error``."""

    def tracked(destination_id, limit=100):
        """
        Fire with up to ``limit`` :class:`gateway.message.Tracked`: delivered deliveries of
        ``destination_id`` that carry a receipt reference and whose status is not final, the
        least recently checked first.
        """

    def record_status(delivery_id, status, final, now):
        """
        Remember a delivered delivery's remote ``status`` (``final``: stop tracking it) and when
        it was checked. Fires with True when the status differs from the one recorded before.
        """

    def dead_letters(destination_id=None, limit=100):
        """Fire with a list of :class:`gateway.message.DeadLetter`, newest first."""

    def replay(delivery_ids=None, destination_id=None, now=None):
        """
        Make dead deliveries pending again (attempts reset): the ones named, or all of them
        (for one destination when given). Fires with the number replayed.
        """

    def recover(now):
        """
        Make every ``in_flight`` delivery pending again: called once at start-up, when nothing
        of this node is in flight. Fires with the number recovered.
        """

    def depth():
        """Fire with ``{priority: number of pending or in-flight deliveries}``."""

    def record_reply(reply, receipt, status, now):
        """Remember a reply sent (or not, ``status='failed'``) to a citizen."""

    def update_reply_status(update):
        """Apply a :class:`gateway.message.StatusUpdate`; fires with True if a reply matched."""

    def check_writable():
        """Fire with None when a write can be made now; fail with StoreUnavailable if not."""
