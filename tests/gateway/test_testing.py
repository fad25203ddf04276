"""The fakes in gateway.testing pass the contract suites they ship."""

import json

from twisted.trial.unittest import SynchronousTestCase

from gateway.testing import ChannelContractTests, DestinationContractTests, FakeChannel, RecordingDestination


class FakeChannelContractTests(ChannelContractTests, SynchronousTestCase):
    def make_channel(self, context):
        return FakeChannel("fake", {"token": "s3cret"}, context)

    def valid_request(self):
        return {b"X-Fake-Token": b"s3cret"}, json.dumps([{"sender": "1", "text": "halo", "id": "m1"}]).encode()

    def refused_request(self):
        return {b"X-Fake-Token": b"wrong"}, b"{}"

    def malformed_request(self):
        return {b"X-Fake-Token": b"s3cret"}, b"{not json"


class RecordingDestinationContractTests(DestinationContractTests, SynchronousTestCase):
    http = False

    def make_destination(self, context):
        return RecordingDestination("rec", {}, context)
