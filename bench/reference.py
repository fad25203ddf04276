"""
The ceiling for the benchmark: the most trivial twisted.web resource that answers the same POST
the web channel gets (read the body, answer ``202`` with a small JSON body), on the same reactor,
with its ``Site`` set up as Siaga's is: no access log, and POST bodies not parsed as form
submissions (Siaga's channels read their own bodies; twisted.web's default parse would cost the
reference about as much again as the rest of its request).

    python bench/reference.py --port-file PATH
"""

from __future__ import annotations

import argparse
import os

from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Site


class Accept(Resource):
    isLeaf = True

    def render_POST(self, request):
        request.content.read()
        request.setResponseCode(202)
        request.setHeader(b"content-type", b"application/json")
        return b'{"message_id": "00000000000000000000000000", "ticket": "WEB-000000"}'


class QuietSite(Site):
    def log(self, request):
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--port-file", required=True)
    args = parser.parse_args()
    site = QuietSite(Accept(), parsePOSTFormSubmission=False)
    port = reactor.listenTCP(0, site, interface="127.0.0.1", backlog=1024)
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(port.getHost().port))
    os.replace(tmp, args.port_file)
    reactor.run()


if __name__ == "__main__":
    main()
