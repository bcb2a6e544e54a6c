"""The read-only status page (Starlette, Jinja2 templates, Server-Sent Events, plain JS).

``create_app(state_dir=..., history_path=..., env=...)`` builds it; ``sdp-reconcile serve``
runs it alone (``server.serve_forever``) and ``watch`` runs it in a thread
(``server.WebServer``). Modules, one concern each:

* ``app``: wiring (routes, middleware, shutdown); ``context``: what handlers share;
* ``guard``: the session guard and security headers; ``sessions``: sessions and the login
  throttle; ``login``: the Bitbucket check through the gateway agent; ``account``: the
  login/logout/healthz routes; ``forms``: the bounded form reader;
* ``hub``: the one poller tailing the history's events; ``stream``: ``GET /events``;
* ``pages``: the HTML routes; ``views``, ``catalog``: what they show (pure);
  ``queries``: the history reads; ``stateview``: the state directory, reloaded on change;
  ``nodes``: the live survey of the agents; ``rendering``: Jinja2 (autoescape on);
* ``hooks``: ``watch``'s ``POST /hooks/bitbucket``, mounted beside the page
  (``create_app(extra_routes=...)``); ``bitbucket``: its signature check, payloads and rate
  limit (pure).

The page never changes anything: not the state, not the history, not a node. The webhook
endpoint only records a signed push and asks ``watch`` for a pass.
"""

from sdp_reconciler.web.app import create_app
from sdp_reconciler.web.server import WebServer, serve_forever
from sdp_reconciler.web.settings import DEFAULT_LISTEN, WebSettings

__all__ = ["DEFAULT_LISTEN", "WebServer", "WebSettings", "create_app", "serve_forever"]
