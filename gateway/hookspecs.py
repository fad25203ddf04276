"""
The hooks of Siaga's plugin system (pluggy project name ``siaga``).

A plugin is a module or object with functions marked ``@hookimpl`` (``from gateway.hookspecs
import hookimpl``), found among the built-in ``plugins.*`` modules or through the ``siaga``
entry-point group of an installed package.

Registration hooks receive a ``register`` callable and are called once at start-up. Observer
hooks are called as things happen; they must return quickly and must not raise (an exception is
logged and ignored).
"""

import pluggy

PROJECT = "siaga"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def siaga_register_channels(register):
    """
    Register channel types: ``register("whatsapp", WhatsAppChannel)``. The class must
    implement :class:`gateway.interfaces.IChannel`, declare its configuration keys in an
    ``options`` attribute and take ``(name, options, context)``.
    """


@hookspec
def siaga_register_destinations(register):
    """
    Register destination types: ``register("webhook", WebhookDestination)``. The class must
    implement :class:`gateway.interfaces.IDestination`, declare ``options`` and take
    ``(name, options, context)``.
    """


@hookspec
def siaga_register_classifiers(register):
    """
    Register classifiers: ``register("rules", RuleClassifier)``. The class must implement
    :class:`gateway.interfaces.IClassifier`, declare ``options`` (its keys under ``triage:`` in
    the configuration) and take ``(name, options, context)``. ``triage: {classifier: NAME}``
    chooses which one runs.
    """


@hookspec
def siaga_register_commands(register):
    """
    Register ``siaga`` sub-commands: ``register("telegram", add_arguments, run)``.
    ``add_arguments(parser)`` fills an ``argparse`` sub-parser; ``run(args)`` does the work and
    returns the exit status. ``args.config`` holds the ``--config`` path.
    """


@hookspec
def siaga_message_triaged(message, triage):
    """A :class:`gateway.message.Message` got its :class:`gateway.message.Triage` (before storing)."""


@hookspec
def siaga_message_accepted(message, triage):
    """A new message is durably stored (not called for duplicates)."""


@hookspec
def siaga_delivered(delivery, receipt):
    """A :class:`gateway.message.Delivery` was taken by its destination with this receipt."""


@hookspec
def siaga_dead_lettered(delivery, error):
    """A delivery failed for good (permanent error, or out of attempts); ``error`` is a text."""


@hookspec
def siaga_status_changed(delivery, status):
    """A destination reported a new status (a text) for the case it took as ``delivery``."""
